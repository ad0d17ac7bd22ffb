//! The recovery daemon's process: a client of its own ctdbd over the unix socket that drives
//! the sans-IO [`Recoverd`] core (mirrors the process side of `ctdb/server/ctdb_recoverd.c`).
//!
//! ctdbd starts it as a separate process (re-executing its own binary, see
//! [`RECOVERD_ARG`]) rather than forking a copy of itself: the child then starts from a clean
//! slate, with no inherited event loop, sockets or buffered output to tear down. Like stock's
//! recoverd it dies with its parent and talks to the rest of the cluster only through ctdbd.

use crate::common::clock::{wall_clock_now, Instant, MonotonicClock};
use crate::common::logging::CtdbLogger;
use crate::common::spawn::{pipe_cloexec, Child, Spawn};
use crate::common::sys;
use crate::protocol::header::CURRENT_NODE;
use crate::protocol::helper::{
    helper_result_from_read, RecoveryHelperArgs, TakeoverHelperArgs, ENV_DBDIR_STATE,
    ENV_DISABLE_IP_FAILOVER,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{Body, FrameReader, Packet, Padding};
use crate::protocol::{SockAddr, Timeval};
use crate::server::cluster_mutex::{ClusterMutex, ReleasingHelper, DEFAULT_RELEASE_GRACE};
use crate::server::recoverd::{
    ClusterLockEvent, Effect, HelperKind, Recoverd, RecoverdConfig, RecoverdHost, Token,
};
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token as MioToken};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::Duration;

/// The argument with which ctdbd re-executes itself as its recovery daemon.
pub const RECOVERD_ARG: &str = "--ctdb-rs-recovery-daemon";

const SOCKET: MioToken = MioToken(0);
const SIGNALS: MioToken = MioToken(1);
const RECOVERY_PIPE: MioToken = MioToken(2);
const TAKEOVER_PIPE: MioToken = MioToken(3);
const LOCK_BASE: usize = 1 << 32;
/// Largest frame accepted from ctdbd (database pulls stream up to `RecBufferSizeLimit`).
const MAX_FRAME: u32 = 256 << 20;
/// Bytes queued for ctdbd before the recovery daemon gives up on it.
const MAX_OUTPUT: usize = 256 << 20;

/// Everything the recovery daemon needs, gathered by ctdbd's binary.
#[derive(Debug)]
pub struct RecoverdOptions {
    pub socket: PathBuf,
    pub ctdbd_pid: i32,
    pub config: RecoverdConfig,
    pub recovery_helper: PathBuf,
    pub takeover_helper: PathBuf,
    pub cluster_mutex_helper: PathBuf,
    pub nodes_file: PathBuf,
    /// Exported to the recovery helper as `CTDB_DBDIR_STATE`.
    pub state_dir: PathBuf,
    pub logger: Option<&'static CtdbLogger>,
}

struct Host {
    ctdbd_pid: i32,
    nodes_file: PathBuf,
}

impl RecoverdHost for Host {
    fn ctdbd_alive(&self) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.ctdbd_pid), None).is_ok()
    }
    fn wall_clock(&self) -> Timeval {
        let (tv_sec, tv_usec) = wall_clock_now();
        Timeval { tv_sec, tv_usec }
    }
    fn have_ip(&self, addr: &SockAddr) -> bool {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return false;
        };
        let want = addr.ip();
        addrs.filter_map(|a| a.address).any(|a| {
            a.as_sockaddr_in().map(|s| std::net::IpAddr::V4(s.ip())) == Some(want)
                || a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())) == Some(want)
        })
    }
    fn read_nodes_file(&self) -> Result<u32, String> {
        crate::common::nodes::load(&self.nodes_file)
            .map(|n| u32::try_from(n.len()).unwrap_or(u32::MAX))
            .map_err(|e| e.to_string())
    }
}

struct RunningHelper {
    child: Child,
    pipe: File,
    result: Vec<u8>,
}

struct Process {
    poll: Poll,
    core: Recoverd,
    clock: MonotonicClock,
    host: Host,
    opts: RecoverdOptions,
    stream: UnixStream,
    reader: FrameReader,
    output: Vec<u8>,
    writable_registered: bool,
    next_reqid: u32,
    /// reqid of a control in flight → the core's token (`None` for srvid registrations).
    in_flight: BTreeMap<u32, Option<Token>>,
    helpers: BTreeMap<HelperKind, RunningHelper>,
    locks: BTreeMap<u64, ClusterMutex>,
    releasing: Vec<ReleasingHelper>,
    signals: nix::sys::signalfd::SignalFd,
    exit: Option<i32>,
}

/// Runs the recovery daemon until its core exits or ctdbd goes away; returns the exit code.
pub fn run(opts: RecoverdOptions) -> i32 {
    match Process::new(opts) {
        Ok(mut p) => p.run(),
        Err(e) => {
            log::error!("recovery daemon failed to start: {e}");
            1
        }
    }
}

impl Process {
    fn new(opts: RecoverdOptions) -> io::Result<Process> {
        // Die with ctdbd, as stock's recoverd does through its pipe.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
        if nix::unistd::getppid().as_raw() != opts.ctdbd_pid {
            return Err(io::Error::other(
                "ctdbd went away before the recovery daemon started",
            ));
        }
        let signals = sys::signal_fd(&[
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGCHLD,
            Signal::SIGHUP,
        ])
        .map_err(|e| io::Error::other(e.to_string()))?;
        let std_stream = std::os::unix::net::UnixStream::connect(&opts.socket)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = UnixStream::from_std(std_stream);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE)?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let clock = MonotonicClock::new();
        let host = Host {
            ctdbd_pid: opts.ctdbd_pid,
            nodes_file: opts.nodes_file.clone(),
        };
        let core = Recoverd::new(opts.config.clone(), clock.now(), &host);
        Ok(Process {
            poll,
            core,
            clock,
            host,
            opts,
            stream,
            reader: FrameReader::new(MAX_FRAME),
            output: Vec::new(),
            writable_registered: false,
            next_reqid: 1,
            in_flight: BTreeMap::new(),
            helpers: BTreeMap::new(),
            locks: BTreeMap::new(),
            releasing: Vec::new(),
            signals,
            exit: None,
        })
    }

    fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(64);
        self.run_effects();
        while self.exit.is_none() {
            let now = self.clock.now();
            let timeout = [
                self.core.poll_timeout(),
                self.locks.values().filter_map(ClusterMutex::deadline).min(),
                self.releasing
                    .iter()
                    .filter_map(ReleasingHelper::deadline)
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("recovery daemon event loop failed: {e}");
                return 1;
            }
            let now = self.clock.now();
            for event in events.iter() {
                match event.token() {
                    SOCKET => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_socket(now);
                        }
                        if event.is_writable() {
                            self.flush();
                        }
                    }
                    SIGNALS => self.handle_signals(now),
                    RECOVERY_PIPE => self.read_helper(now, HelperKind::Recovery),
                    TAKEOVER_PIPE => self.read_helper(now, HelperKind::Takeover),
                    MioToken(t) if t >= LOCK_BASE => self.read_lock(now, (t - LOCK_BASE) as u64),
                    _ => {}
                }
                self.run_effects();
            }
            let now = self.clock.now();
            let expired: Vec<(u64, ClusterLockEvent)> = self
                .locks
                .iter_mut()
                .filter_map(|(&id, m)| m.check_timeout(now).map(|e| (id, e.into())))
                .collect();
            for (id, event) in expired {
                self.core.on_cluster_lock(now, id, event, &self.host);
            }
            for helper in &mut self.releasing {
                helper.check_timeout(now);
            }
            self.core.handle_timeout(now, &self.host);
            self.run_effects();
        }
        self.exit.unwrap_or(1)
    }

    fn run_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            if self.exit.is_some() {
                return;
            }
            self.execute(effect);
        }
        self.flush();
    }

    fn execute(&mut self, effect: Effect) {
        let now = self.clock.now();
        match effect {
            Effect::RegisterSrvid { srvid } => {
                let reqid = self.send_control(
                    CURRENT_NODE,
                    ControlOpcode::RegisterSrvid,
                    srvid,
                    0,
                    Vec::new(),
                );
                self.in_flight.insert(reqid, None);
            }
            Effect::SendControl {
                token,
                destnode,
                opcode,
                srvid,
                flags,
                data,
                ..
            } => {
                let reqid = self.send_control(destnode, opcode, srvid, flags, data);
                self.in_flight.insert(reqid, Some(token));
            }
            Effect::SendMessage {
                destnode,
                srvid,
                data,
            } => {
                let packet = Packet::client_message(destnode, srvid, data);
                self.queue(&packet);
            }
            Effect::StartRecoveryHelper { generation } => {
                let socket = self.opts.socket.display().to_string();
                let program = self.opts.recovery_helper.display().to_string();
                let argv = |fd| {
                    RecoveryHelperArgs {
                        write_fd: fd,
                        socket: socket.clone(),
                        generation,
                    }
                    .to_argv(&program)
                };
                let env = vec![(
                    ENV_DBDIR_STATE.to_string(),
                    self.opts.state_dir.display().to_string(),
                )];
                self.start_helper(now, HelperKind::Recovery, &argv, &env);
            }
            Effect::StartTakeoverHelper { force_rebalance } => {
                let socket = self.opts.socket.display().to_string();
                let program = self.opts.takeover_helper.display().to_string();
                let argv = |fd| {
                    TakeoverHelperArgs {
                        write_fd: fd,
                        socket: socket.clone(),
                        force_rebalance: force_rebalance.clone(),
                    }
                    .to_argv(&program)
                };
                let mut env = Vec::new();
                if self.opts.config.failover_disabled {
                    env.push((ENV_DISABLE_IP_FAILOVER.to_string(), "1".to_string()));
                }
                self.start_helper(now, HelperKind::Takeover, &argv, &env);
            }
            Effect::KillHelper { kind } => {
                if let Some(h) = self.helpers.remove(&kind) {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&h.pipe.as_raw_fd()));
                    let _ = h.child.signal(libc::SIGKILL);
                }
            }
            Effect::TakeClusterLock { id, timeout } => {
                let lock = self.opts.config.cluster_lock.clone().unwrap_or_default();
                let helper = self.opts.cluster_mutex_helper.display().to_string();
                match ClusterMutex::start(&lock, &helper, Some(timeout), now) {
                    Ok(mutex) => {
                        if let Some(fd) = mutex.read_fd() {
                            let token = MioToken(LOCK_BASE + usize::try_from(id).unwrap_or(0));
                            if let Err(e) = self.poll.registry().register(
                                &mut SourceFd(&fd),
                                token,
                                Interest::READABLE,
                            ) {
                                log::error!("cannot watch the cluster mutex helper: {e}");
                            }
                        }
                        self.locks.insert(id, mutex);
                    }
                    Err(e) => {
                        log::error!("Failed to start the cluster mutex helper: {e}");
                        self.core
                            .on_cluster_lock(now, id, ClusterLockEvent::Error, &self.host);
                    }
                }
            }
            Effect::ReleaseClusterLock { id } => {
                if let Some(mutex) = self.locks.remove(&id) {
                    if let Some(fd) = mutex.read_fd() {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                    self.releasing
                        .push(mutex.release(now, DEFAULT_RELEASE_GRACE));
                }
            }
            Effect::SetLogLevel { level } => {
                if let Some(logger) = self.opts.logger {
                    logger.set_level(level);
                }
            }
            Effect::Exit { code } => {
                for (_, mutex) in std::mem::take(&mut self.locks) {
                    self.releasing
                        .push(mutex.release(now, DEFAULT_RELEASE_GRACE));
                }
                self.exit = Some(code);
            }
        }
    }

    fn send_control(
        &mut self,
        destnode: u32,
        opcode: ControlOpcode,
        srvid: u64,
        flags: u32,
        data: Vec<u8>,
    ) -> u32 {
        let reqid = self.next_reqid;
        self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
        let packet = Packet::client_control(destnode, reqid, opcode, srvid, flags, data);
        self.queue(&packet);
        reqid
    }

    fn queue(&mut self, packet: &Packet) {
        packet.encode_into(Padding::Align8, &mut self.output);
        if self.output.len() > MAX_OUTPUT {
            log::error!("recovery daemon: ctdbd is not reading; exiting");
            self.exit = Some(1);
        }
    }

    fn flush(&mut self) {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => break,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::error!("recovery daemon lost ctdbd: {e}");
                    self.exit = Some(1);
                    return;
                }
            }
        }
        let want_write = !self.output.is_empty();
        if want_write != self.writable_registered {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = self
                .poll
                .registry()
                .reregister(&mut self.stream, SOCKET, interest);
            self.writable_registered = want_write;
        }
    }

    fn read_socket(&mut self, now: Instant) {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    log::error!("recovery daemon: ctdbd closed the connection, exiting");
                    self.exit = Some(1);
                    return;
                }
                Ok(n) => self.reader.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::error!("recovery daemon: reading from ctdbd failed: {e}");
                    self.exit = Some(1);
                    return;
                }
            }
        }
        loop {
            let frame = match self.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    log::error!("recovery daemon: bad frame from ctdbd: {e}");
                    continue;
                }
            };
            let Ok(packet) = Packet::pull(&frame) else {
                log::error!("recovery daemon: undecodable packet from ctdbd");
                continue;
            };
            match packet.body {
                Body::ReplyControl(r) => {
                    if let Some(Some(token)) = self.in_flight.remove(&packet.reqid) {
                        self.core
                            .on_control_reply(now, token, r.status, &r.data, &self.host);
                    }
                }
                Body::ReqMessage(m) => self.core.on_message(now, m.srvid, &m.data, &self.host),
                _ => {}
            }
            self.run_effects();
        }
    }

    fn start_helper(
        &mut self,
        now: Instant,
        kind: HelperKind,
        argv: &dyn Fn(i32) -> Vec<String>,
        env: &[(String, String)],
    ) {
        const RESULT_FD: i32 = 3;
        let started = (|| -> Result<RunningHelper, String> {
            let (read_end, write_end) = pipe_cloexec().map_err(|e| e.to_string())?;
            let pipe = File::from(read_end);
            sys::set_nonblocking(&pipe, true).map_err(|e| e.to_string())?;
            let mut spawn = Spawn::from_argv(&argv(RESULT_FD)).map_err(|e| e.to_string())?;
            spawn.map_fd(write_end.as_fd(), RESULT_FD);
            for (name, value) in env {
                spawn.env(name, value);
            }
            let child = spawn.spawn_child().map_err(|e| e.to_string())?;
            drop(write_end);
            Ok(RunningHelper {
                child,
                pipe,
                result: Vec::new(),
            })
        })();
        match started {
            Ok(helper) => {
                let token = if kind == HelperKind::Recovery {
                    RECOVERY_PIPE
                } else {
                    TAKEOVER_PIPE
                };
                let fd = helper.pipe.as_raw_fd();
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut SourceFd(&fd), token, Interest::READABLE)
                {
                    log::error!("cannot watch the {kind:?} helper: {e}");
                }
                self.helpers.insert(kind, helper);
            }
            Err(e) => {
                log::error!("Failed to start the {kind:?} helper: {e}");
                self.core.on_helper_done(now, kind, libc::EIO, &self.host);
            }
        }
    }

    /// The helper writes a 4-byte result and exits; EOF before four bytes is a failure.
    fn read_helper(&mut self, now: Instant, kind: HelperKind) {
        let Some(helper) = self.helpers.get_mut(&kind) else {
            return;
        };
        let mut buf = [0u8; 16];
        let finished = loop {
            match helper.pipe.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    helper.result.extend_from_slice(&buf[..n]);
                    if helper.result.len() >= 4 {
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if !finished {
            return;
        }
        if let Some(h) = self.helpers.remove(&kind) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&h.pipe.as_raw_fd()));
            let result = helper_result_from_read(&h.result[..h.result.len().min(4)]);
            // Stock SIGKILLs the helper once it has answered.
            let _ = h.child.signal(libc::SIGKILL);
            self.core.on_helper_done(now, kind, result, &self.host);
        }
    }

    fn read_lock(&mut self, now: Instant, id: u64) {
        let Some(mutex) = self.locks.get_mut(&id) else {
            return;
        };
        let events = mutex.on_readable(now);
        if mutex.read_fd().is_none() {
            // EOF: the helper is gone; its pipe is closed and no longer watched.
            self.locks.remove(&id);
        }
        for event in events {
            self.core.on_cluster_lock(now, id, event.into(), &self.host);
        }
    }

    fn handle_signals(&mut self, now: Instant) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo.cast_signed()) {
                Ok(Signal::SIGTERM | Signal::SIGINT) => self.core.on_terminate(now),
                Ok(Signal::SIGHUP) => {
                    if let Some(logger) = self.opts.logger {
                        let _ = logger.reopen();
                    }
                }
                Ok(Signal::SIGCHLD) => self.reap(),
                _ => {}
            }
        }
    }

    fn reap(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.releasing.retain(|h| h.pid() != pid.as_raw());
                    }
                }
            }
        }
    }
}

/// How long ctdbd waits before starting a recovery daemon again after one died.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
