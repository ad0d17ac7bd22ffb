//! The I/O half of ctdb-eventd (mirrors `ctdb/common/sock_daemon.c` as eventd uses it, the
//! process half of `ctdb/common/run_proc.c`, and `ctdb/event/event_daemon.c`).
//!
//! One thread and one `mio::Poll`: the listening socket, every client connection, every child's
//! output pipe and a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1). Readiness becomes
//! calls into [`EventContext`]; its effects become syscalls. Stock details kept:
//!
//! * the pid file is taken first (a second eventd fails with `EEXIST`), then the socket is
//!   bound, then `unsigned int 0` is written to the `-S` fd, which is otherwise kept open (and
//!   close-on-exec) for the daemon's life: ctdbd watches it to notice eventd dying;
//! * the `-P` pid is checked 1 s after start and every 5 s after that; when it is gone eventd
//!   exits with `ESRCH`; SIGTERM/SIGINT exit with 0; SIGHUP reopens the log file; SIGUSR1
//!   (reconfigure) is only logged, since nothing eventd reads can change on reload;
//! * a child is forked and `execv`ed (no `#!`-less /bin/sh fallback) in its own process group,
//!   stdout and stderr on one pipe, stdin inherited, nothing blocked; exec failures exit with
//!   64 + errno; a script is done when it is reaped, not when its pipe closes, and whatever is
//!   in the pipe at that moment is its last output;
//! * a client sending a packet that does not parse is disconnected.
//!
//! Bounds: at most [`MAX_CLIENTS`] connections, [`MAX_IN_FLIGHT`] unanswered requests per client
//! (further input is left unread until replies go out), and [`MAX_PENDING_OUTPUT`] bytes of
//! unsent replies per client (beyond that the client is dropped).

use super::context::{
    ClientId, Effect, EventContext, KillSignal, Now, ProcExit, ProcId, SpawnOutcome,
};
use super::script::FsScriptDir;
use crate::common::clock::{wall_clock_now, Instant, MonotonicClock};
use crate::common::logging::CtdbLogger;
use crate::common::sys::{bind_unix_socket, signal_fd, PidFile, SysError};
use crate::protocol::event::{EventReplyPacket, EventRequestPacket, FrameBuffer};
use crate::protocol::{Marshal, Timeval};
use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::CString;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const MAX_CLIENTS: usize = 1024;
pub const MAX_IN_FLIGHT: usize = 1024;
pub const MAX_PENDING_OUTPUT: usize = 256 * 1024 * 1024;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const FIRST_DYNAMIC_TOKEN: usize = 2;

const READ_CHUNK: usize = 64 * 1024;

/// When the watched pid is first checked, and how often after that.
const PID_WATCH_FIRST: Duration = Duration::from_secs(1);
const PID_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// What the daemon needs to run.
#[derive(Debug)]
pub struct ShellOptions {
    /// `rundir/eventd.socket`.
    pub socket: PathBuf,
    /// `rundir/eventd.pid`.
    pub pid_file: PathBuf,
    /// `etcdir/events`, holding one directory per component.
    pub script_dir: PathBuf,
    /// The debug script's full path, when configured.
    pub debug_script: Option<PathBuf>,
    /// `-S`: where to report a successful start. Already close-on-exec.
    pub startup_fd: Option<OwnedFd>,
    /// `-P`: the pid whose death ends the daemon.
    pub watch_pid: Option<i32>,
    /// The installed logger, reopened on SIGHUP.
    pub logger: Option<&'static CtdbLogger>,
}

/// Why the daemon stopped. [`Exit::code`] is the process exit status stock uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Signal(i32),
    WatchedPidGone,
    SocketFailed,
    PidFileTaken,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Signal(_) => 0,
            Exit::WatchedPidGone => libc::ESRCH,
            Exit::SocketFailed => libc::EIO,
            Exit::PidFileTaken => libc::EEXIST,
        }
    }
}

/// A failure to set up the event loop itself.
#[derive(Debug)]
pub enum ShellError {
    Sys(SysError),
    Io(&'static str, std::io::Error),
}

impl std::fmt::Display for ShellError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShellError::Sys(e) => e.fmt(f),
            ShellError::Io(op, e) => write!(f, "{op}: {e}"),
        }
    }
}

impl std::error::Error for ShellError {}

#[derive(Debug)]
struct Client {
    id: ClientId,
    stream: UnixStream,
    frames: FrameBuffer,
    out: Vec<u8>,
    out_pos: usize,
    in_flight: usize,
    /// Input was left unread because of [`MAX_IN_FLIGHT`]; it must be resumed by hand because
    /// readiness is edge-triggered.
    read_paused: bool,
}

#[derive(Debug)]
struct Pipe {
    proc_id: ProcId,
    fd: OwnedFd,
}

/// The running daemon.
#[derive(Debug)]
struct Shell {
    poll: Poll,
    listener: Option<UnixListener>,
    socket_path: PathBuf,
    signals: SignalFd,
    core: EventContext<FsScriptDir>,
    clock: MonotonicClock,
    clients: HashMap<Token, Client>,
    client_tokens: HashMap<ClientId, Token>,
    pipes: HashMap<Token, Pipe>,
    proc_pipes: HashMap<ProcId, Token>,
    pids: HashMap<i32, ProcId>,
    next_token: usize,
    next_client: u64,
    watch_pid: Option<i32>,
    next_pid_check: Instant,
    logger: Option<&'static CtdbLogger>,
    exit: Option<Exit>,
}

fn sys(e: SysError) -> ShellError {
    ShellError::Sys(e)
}

/// Runs the daemon until a signal or the watched pid's death; returns why it stopped.
pub fn run(options: ShellOptions) -> Result<Exit, ShellError> {
    // Signals must be blocked before any child exists, or an early SIGCHLD could be lost.
    let signals = signal_fd(&[
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ])
    .map_err(sys)?;
    let pid_file = match PidFile::create(&options.pid_file) {
        Ok(pid_file) => pid_file,
        Err(e) => {
            log::debug!("{e}");
            return Ok(Exit::PidFileTaken);
        }
    };
    log::info!("daemon started, pid={}", std::process::id());
    let core = EventContext::new(
        FsScriptDir,
        options.script_dir.clone(),
        options.debug_script.clone(),
    );
    log::info!("startup completed successfully");

    let socket_path = options.socket.clone();
    let listener = match bind_unix_socket(&socket_path) {
        Ok(listener) => listener,
        Err(e) => {
            log::error!("{e}");
            log::error!("socket {} closed unexpectedly", socket_path.display());
            log::info!("Shutting down");
            drop(pid_file);
            return Ok(Exit::SocketFailed);
        }
    };
    log::info!("listening on {}", socket_path.display());
    let mut listener = UnixListener::from_std(listener);

    let poll = Poll::new().map_err(|e| ShellError::Io("epoll_create", e))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| ShellError::Io("register listener", e))?;
    poll.registry()
        .register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )
        .map_err(|e| ShellError::Io("register signalfd", e))?;

    if let Some(fd) = &options.startup_fd {
        notify_startup(fd);
    }

    let clock = MonotonicClock::new();
    let start = clock.now();
    let mut shell = Shell {
        poll,
        listener: Some(listener),
        socket_path,
        signals,
        core,
        clock,
        clients: HashMap::new(),
        client_tokens: HashMap::new(),
        pipes: HashMap::new(),
        proc_pipes: HashMap::new(),
        pids: HashMap::new(),
        next_token: FIRST_DYNAMIC_TOKEN,
        next_client: 1,
        watch_pid: options.watch_pid.filter(|&pid| pid > 1),
        logger: options.logger,
        next_pid_check: start.saturating_add(PID_WATCH_FIRST),
        exit: None,
    };
    let result = shell.run_loop();
    shell.shut_down();
    drop(pid_file);
    // The startup fd stays open until here so that ctdbd sees EOF only when eventd is gone.
    drop(options.startup_fd);
    result
}

fn notify_startup(fd: &OwnedFd) {
    let zero = 0u32.to_ne_bytes();
    // SAFETY: `fd` is an open descriptor owned by the caller; the buffer is valid for its length.
    let written = unsafe { libc::write(fd.as_raw_fd(), zero.as_ptr().cast(), zero.len()) };
    if usize::try_from(written).ok() != Some(zero.len()) {
        log::warn!("Failed to write zero to pipe FD");
    }
}

impl Shell {
    fn now(&self) -> Now {
        let (tv_sec, tv_usec) = wall_clock_now();
        Now {
            mono: self.clock.now(),
            wall: Timeval { tv_sec, tv_usec },
        }
    }

    fn new_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn run_loop(&mut self) -> Result<Exit, ShellError> {
        let mut events = Events::with_capacity(256);
        loop {
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ShellError::Io("epoll_wait", e)),
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_clients(),
                    SIGNALS => self.read_signals(),
                    token if self.clients.contains_key(&token) => {
                        if event.is_writable() {
                            self.flush_client(token);
                        }
                        if event.is_readable() || event.is_read_closed() {
                            self.read_client(token);
                        }
                    }
                    token if self.pipes.contains_key(&token) => self.read_pipe(token),
                    // A source already closed by an earlier event of this batch.
                    _ => {}
                }
            }
            let now = self.now();
            if self
                .core
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now.mono)
            {
                self.core.handle_timeout(now);
                self.apply_effects();
            }
            self.resume_paused_clients();
            self.check_watched_pid();
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let now = self.clock.now();
        let mut deadline = self.core.poll_timeout();
        if self.watch_pid.is_some() {
            deadline = Some(deadline.map_or(self.next_pid_check, |d| d.min(self.next_pid_check)));
        }
        // Round up to whole milliseconds so that a wakeup never comes just before the deadline.
        deadline.map(|d| {
            let wait = d.saturating_since(now);
            Duration::from_millis(
                u64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u64::MAX),
            )
        })
    }

    fn check_watched_pid(&mut self) {
        let Some(pid) = self.watch_pid else {
            return;
        };
        let now = self.clock.now();
        if now < self.next_pid_check {
            return;
        }
        self.next_pid_check = now.saturating_add(PID_WATCH_INTERVAL);
        match kill(Pid::from_raw(pid), None) {
            Ok(()) => {}
            Err(nix::errno::Errno::ESRCH) => {
                log::error!("PID {pid} gone away, exiting");
                self.exit = Some(Exit::WatchedPidGone);
            }
            Err(e) => log::error!("Failed to check PID status {pid}, ret={}", e as i32),
        }
    }

    fn read_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
                    if signo == libc::SIGCHLD {
                        self.reap_children();
                        continue;
                    }
                    log::info!("Received signal {signo}");
                    match signo {
                        libc::SIGTERM | libc::SIGINT => self.exit = Some(Exit::Signal(signo)),
                        libc::SIGUSR1 => log::info!("reconfigure completed successfully"),
                        libc::SIGHUP => match self.logger.map_or(Ok(()), CtdbLogger::reopen) {
                            Ok(()) => log::info!("reopen logs completed successfully"),
                            Err(e) => log::error!("reopen logs, ret={e}"),
                        },
                        _ => {}
                    }
                }
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("signalfd read failed: {e}");
                    return;
                }
            }
        }
    }

    fn reap_children(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => status,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, ProcExit::Exited(code)),
                WaitStatus::Signaled(pid, signal, _) => (pid, ProcExit::Signaled(signal as i32)),
                WaitStatus::StillAlive => return,
                _ => continue,
            };
            let Some(proc_id) = self.pids.remove(&pid.as_raw()) else {
                continue;
            };
            // Whatever the child left in the pipe is its last word; a grandchild holding the
            // pipe open does not delay the result.
            if let Some(token) = self.proc_pipes.get(&proc_id).copied() {
                self.drain_pipe(token);
                self.close_pipe(token);
            }
            let now = self.now();
            self.core.proc_exited(now, proc_id, exit);
            self.apply_effects();
        }
    }

    fn accept_clients(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("failed to accept new connection: {e}");
                    return;
                }
            };
            if self.clients.len() >= MAX_CLIENTS {
                log::error!("Too many clients, refusing connection");
                continue;
            }
            let token = self.new_token();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error!("Failed to register client: {e}");
                continue;
            }
            let id = ClientId(self.next_client);
            self.next_client += 1;
            self.client_tokens.insert(id, token);
            self.clients.insert(
                token,
                Client {
                    id,
                    stream,
                    frames: FrameBuffer::new(),
                    out: Vec::new(),
                    out_pos: 0,
                    in_flight: 0,
                    read_paused: false,
                },
            );
            // Anything that arrived before registration is signalled by the first edge.
        }
    }

    /// Reads and handles frames until the socket is drained or the client must wait.
    fn read_client(&mut self, token: Token) {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            if client.in_flight >= MAX_IN_FLIGHT {
                client.read_paused = true;
                return;
            }
            match client.frames.next_frame() {
                Ok(Some(frame)) => {
                    client.in_flight += 1;
                    let id = client.id;
                    self.handle_frame(token, id, &frame);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    log::error!("Invalid packet received: {e}");
                    return self.drop_client(token);
                }
            }
            match client.stream.read(&mut buf) {
                Ok(0) => return self.drop_client(token),
                Ok(n) => client.frames.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    client.read_paused = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.drop_client(token),
            }
        }
    }

    fn handle_frame(&mut self, token: Token, id: ClientId, frame: &[u8]) {
        let packet = match EventRequestPacket::pull(frame) {
            Ok((packet, _)) => packet,
            Err(e) => {
                log::error!("Invalid packet received, buflen={} ({e})", frame.len());
                return self.drop_client(token);
            }
        };
        let now = self.now();
        self.core.handle_request(now, id, packet);
        self.apply_effects();
    }

    fn resume_paused_clients(&mut self) {
        let ready: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| c.read_paused && c.in_flight < MAX_IN_FLIGHT)
            .map(|(t, _)| *t)
            .collect();
        for token in ready {
            self.read_client(token);
        }
    }

    fn queue_reply(&mut self, client: ClientId, packet: &EventReplyPacket) {
        let Some(&token) = self.client_tokens.get(&client) else {
            return;
        };
        let Some(conn) = self.clients.get_mut(&token) else {
            return;
        };
        conn.in_flight = conn.in_flight.saturating_sub(1);
        packet.push(&mut conn.out);
        if conn.out.len() - conn.out_pos > MAX_PENDING_OUTPUT {
            log::error!("Client is not reading its replies, dropping it");
            return self.drop_client(token);
        }
        self.flush_client(token);
    }

    fn flush_client(&mut self, token: Token) {
        let Some(conn) = self.clients.get_mut(&token) else {
            return;
        };
        while conn.out_pos < conn.out.len() {
            match conn.stream.write(&conn.out[conn.out_pos..]) {
                Ok(0) => return self.drop_client(token),
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    log::error!("Sending reply failed");
                    return self.drop_client(token);
                }
            }
        }
        conn.out.clear();
        conn.out_pos = 0;
    }

    fn drop_client(&mut self, token: Token) {
        let Some(mut conn) = self.clients.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.client_tokens.remove(&conn.id);
        drop(conn.stream);
        let now = self.now();
        self.core.client_disconnected(now, conn.id);
        self.apply_effects();
    }

    fn apply_effects(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Reply { client, packet } => self.queue_reply(client, &packet),
                Effect::Spawn {
                    proc_id,
                    path,
                    argv,
                } => {
                    let outcome = self.spawn(proc_id, &path, &argv);
                    let now = self.now();
                    self.core.spawned(now, proc_id, outcome);
                }
                Effect::KillGroup { pgid, signal } => {
                    let signal = match signal {
                        KillSignal::Term => Signal::SIGTERM,
                        KillSignal::Kill => Signal::SIGKILL,
                    };
                    if pgid > 1 {
                        let _ = kill(Pid::from_raw(-pgid), signal);
                    }
                }
            }
        }
    }

    /// Starts a child as `run_proc` does: refused with the `stat` errno, or `EACCES` without
    /// the owner-execute bit; otherwise in its own process group with output on a pipe.
    fn spawn(&mut self, proc_id: ProcId, path: &Path, argv: &[String]) -> SpawnOutcome {
        let errno = |e: &std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o100 == 0 => {
                return SpawnOutcome::Failed {
                    errno: libc::EACCES,
                }
            }
            Ok(_) => {}
            Err(e) => return SpawnOutcome::Failed { errno: errno(&e) },
        }
        // Everything the child needs is allocated before fork: after it, the child may only
        // make async-signal-safe calls.
        let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
            return SpawnOutcome::Failed {
                errno: libc::EINVAL,
            };
        };
        let Ok(c_args) = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<CString>, _>>()
        else {
            return SpawnOutcome::Failed {
                errno: libc::EINVAL,
            };
        };
        let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        c_argv.push(std::ptr::null());
        let (read_end, write_end) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(ends) => ends,
            Err(e) => return SpawnOutcome::Failed { errno: e as i32 },
        };
        // SAFETY: eventd is single-threaded, so the child is a faithful copy and, until exec,
        // runs only `exec_child`, which makes async-signal-safe calls on data prepared above.
        let pid = match unsafe { libc::fork() } {
            -1 => {
                return SpawnOutcome::Failed {
                    errno: std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO),
                }
            }
            // SAFETY: see above; `exec_child` never returns.
            0 => unsafe { exec_child(write_end.as_raw_fd(), &c_path, &c_argv) },
            pid => pid,
        };
        // The parent's write end must go, or end of file never comes.
        drop(write_end);
        self.pids.insert(pid, proc_id);
        if let Err(e) = crate::common::sys::set_nonblocking(&read_end, true) {
            log::error!("{e}");
        }
        let token = self.new_token();
        match self.poll.registry().register(
            &mut SourceFd(&read_end.as_raw_fd()),
            token,
            Interest::READABLE,
        ) {
            Ok(()) => {
                self.pipes.insert(
                    token,
                    Pipe {
                        proc_id,
                        fd: read_end,
                    },
                );
                self.proc_pipes.insert(proc_id, token);
            }
            Err(e) => log::error!("Failed to watch output of pid {pid}: {e}"),
        }
        SpawnOutcome::Started { pid }
    }

    /// Reads a pipe until it would block; closes it at end of file.
    fn read_pipe(&mut self, token: Token) {
        if self.drain_pipe(token) {
            self.close_pipe(token);
        }
    }

    /// Feeds everything available to the state machine; true at end of file or error.
    fn drain_pipe(&mut self, token: Token) -> bool {
        let Some(pipe) = self.pipes.get(&token) else {
            return false;
        };
        let fd: RawFd = pipe.fd.as_raw_fd();
        let proc_id = pipe.proc_id;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            // SAFETY: `fd` belongs to a pipe held in `self.pipes` for the whole loop, and `buf`
            // is valid for writes of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(0) => return true,
                Ok(n) => self.core.proc_output(proc_id, &buf[..n]),
                Err(_) => {
                    let e = std::io::Error::last_os_error();
                    match e.kind() {
                        ErrorKind::Interrupted => {}
                        ErrorKind::WouldBlock => return false,
                        _ => return true,
                    }
                }
            }
        }
    }

    fn close_pipe(&mut self, token: Token) {
        if let Some(pipe) = self.pipes.remove(&token) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&pipe.fd.as_raw_fd()));
            self.proc_pipes.remove(&pipe.proc_id);
        }
    }

    /// Stops listening, drops every client and kills every tracked process group.
    fn shut_down(&mut self) {
        log::info!("Shutting down");
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            drop(listener);
            let _ = std::fs::remove_file(&self.socket_path);
        }
        for (_, mut conn) in self.clients.drain() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.client_tokens.clear();
        self.core.shutdown();
        while let Some(effect) = self.core.poll_effect() {
            if let Effect::KillGroup { pgid, .. } = effect {
                if pgid > 1 {
                    let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
                }
            }
        }
        for token in self.pipes.keys().copied().collect::<Vec<_>>() {
            self.close_pipe(token);
        }
    }
}

/// The child half of `run_proc`'s `proc_start`: output to the pipe, a process group of its
/// own, a clean signal state, then `execv` — not `execvp`, which would run a script without a
/// `#!` line through /bin/sh where stock reports `ENOEXEC`. Failures exit with 64 + errno,
/// the convention the parent decodes.
///
/// # Safety
///
/// Must only be called in a freshly forked child of a single-threaded process; `argv` must be
/// a NULL-terminated array of pointers into live C strings.
unsafe fn exec_child(output_fd: RawFd, path: &CString, argv: &[*const libc::c_char]) -> ! {
    // SAFETY: each call is async-signal-safe and its arguments are valid (see above).
    unsafe {
        let fail = || -> ! {
            let errno = *libc::__errno_location();
            libc::_exit(64 + errno)
        };
        if libc::dup2(output_fd, libc::STDOUT_FILENO) == -1
            || libc::dup2(output_fd, libc::STDERR_FILENO) == -1
        {
            fail();
        }
        if libc::setpgid(0, 0) != 0 {
            fail();
        }
        // The daemon blocks the signals its signalfd reports and ignores SIGPIPE; both would
        // survive exec, and a script with SIGTERM blocked could not be stopped.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execv(path.as_ptr(), argv.as_ptr());
        fail()
    }
}
