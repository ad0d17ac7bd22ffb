//! `ctdb_mutex_fcntl_helper <file> [recheck_interval [ping_timeout]]`: the default cluster lock
//! helper (mirrors `ctdb/server/ctdb_mutex_fcntl_helper.c`).
//!
//! It takes a non-blocking fcntl write lock on byte 0 of `file`, writes one character to stdout
//! (`'0'` taken, `'1'` contended, `'3'` error) and, when it got the lock, holds it until one of:
//! * the parent goes away. Stock checks `kill(getppid(), 0)` every 5 seconds; this helper
//!   notices at once, through three independent signs: stdout (the parent's pipe) reports
//!   POLLERR/POLLHUP as soon as its read end is closed, `PR_SET_PDEATHSIG` delivers SIGTERM when
//!   the parent dies, and `getppid()` changes when we are re-parented (checked every second);
//! * SIGTERM or SIGINT (how ctdbd releases the lock);
//! * the lock file check fails: every `recheck_interval` seconds (default 5, 0 disables it) a
//!   forked checker re-opens the file by name, requires the same device and inode, and takes and
//!   drops a *blocking* lock on byte 1, so that a hung cluster filesystem stalls the check;
//! * with `ping_timeout` > 0, the checker stops pinging (once a second) for that many seconds,
//!   typically because it is stuck in that blocking lock.
//!
//! The check runs in a separate process for the same reason as in stock: fcntl locks belong to
//! the process, and closing *any* descriptor of the file releases all of them, so re-opening the
//! file in the lock holder itself would drop the cluster lock.
//!
//! Quirk kept from stock: a helper whose parent is already pid 1 when it starts reports the
//! lock as taken and then releases it at once.

use ctdb::common::clock::{Instant, MonotonicClock};
use ctdb::protocol::helper::{ClusterMutexResult, FcntlHelperArgs};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How often `getppid()` is compared with the parent we started with.
const PARENT_RECHECK: Duration = Duration::from_secs(1);
/// How often the checker pings when pings are enabled (stock: 1 s).
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait for the killed checker before leaving it to init.
const CHECKER_REAP_WAIT: Duration = Duration::from_millis(200);

/// The signals that end the lock holder. SIGTERM doubles as the parent-death signal.
const EXIT_SIGNALS: [Signal; 2] = [Signal::SIGTERM, Signal::SIGINT];

fn main() -> ExitCode {
    let argv_os: Vec<OsString> = std::env::args_os().collect();
    let progname = argv_os
        .first()
        .map(|arg0| {
            PathBuf::from(arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_else(|| "ctdb_mutex_fcntl_helper".to_owned());
    let argv: Vec<String> = argv_os
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Ok(args) = FcntlHelperArgs::parse(&argv) else {
        eprintln!("Usage: {progname} <file> [recheck_interval [ping_timeout]]");
        return ExitCode::from(1);
    };
    // The path exactly as given, even if it is not UTF-8.
    let lock_path = PathBuf::from(OsString::from_vec(
        argv_os
            .get(1)
            .map(|p| p.clone().into_vec())
            .unwrap_or_default(),
    ));

    let helper = Helper {
        progname,
        lock_path,
        args,
        parent: getppid(),
        clock: MonotonicClock::new(),
    };
    // Set before anything can block, then compared with the parent recorded just above: a
    // parent that died in between has already re-parented us.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        eprintln!("{}: PR_SET_PDEATHSIG failed ({e})", helper.progname);
    }
    helper.run();
    ExitCode::SUCCESS
}

struct Helper {
    progname: String,
    lock_path: PathBuf,
    args: FcntlHelperArgs,
    parent: Pid,
    clock: MonotonicClock,
}

/// Why the lock holder stops holding.
enum ExitReason {
    ParentGone(&'static str),
    Signal(i32),
    CheckerDone,
    PingTimeout,
    Failure(String),
}

impl Helper {
    fn run(&self) {
        let (result, lock) = self.take_lock();
        // From the moment the parent can know that we hold the lock, SIGTERM must take the
        // orderly way out (through the signalfd), not kill us half-way through setting up.
        let signals = lock.as_ref().and_then(|_| self.exit_signals());
        write_result(result);
        let Some(lock) = lock else {
            return;
        };
        if self.parent.as_raw() == 1 {
            eprintln!("parent == 1");
            return;
        }

        let checker = if self.args.recheck_interval > 0 {
            match self.start_checker(&lock, signals.as_ref()) {
                Ok(checker) => Some(checker),
                Err(reason) => {
                    // Stock gives up the lock when it cannot run the checks.
                    eprintln!("{}: {reason}", self.progname);
                    return;
                }
            }
        } else {
            None
        };

        let reason = self.hold(checker.as_ref(), signals.as_ref());
        match reason {
            ExitReason::ParentGone(how) => eprintln!("parent gone ({how})"),
            ExitReason::Signal(signo) => {
                if getppid() != self.parent {
                    eprintln!("parent gone (signal {signo})");
                }
            }
            // The checker has said why.
            ExitReason::CheckerDone => {}
            ExitReason::PingTimeout => {
                eprintln!("{}: ping timeout from lock test child", self.progname)
            }
            ExitReason::Failure(what) => eprintln!("{}: {what}", self.progname),
        }
        // Release first: nothing below may delay it.
        drop(lock);
        if let Some(checker) = checker {
            checker.stop();
        }
    }

    fn take_lock(&self) -> (ClusterMutexResult, Option<File>) {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.lock_path)
        {
            Ok(file) => file,
            Err(e) => {
                eprintln!(
                    "{}: Unable to open {} - ({e})",
                    self.progname,
                    self.lock_path.display()
                );
                return (ClusterMutexResult::Error, None);
            }
        };
        match lock_byte(&file, 0, false) {
            Ok(()) => (ClusterMutexResult::Taken, Some(file)),
            Err(Errno::EACCES | Errno::EAGAIN) => (ClusterMutexResult::Contended, None),
            Err(e) => {
                eprintln!(
                    "{}: Failed to get lock on '{}' - ({})",
                    self.progname,
                    self.lock_path.display(),
                    e.desc()
                );
                (ClusterMutexResult::Error, None)
            }
        }
    }

    fn start_checker(&self, lock: &File, signals: Option<&SignalFd>) -> Result<Checker, String> {
        let meta = lock.metadata().map_err(|e| {
            format!(
                "lock lost - lock file \"{}\" stat failed ({e})",
                self.lock_path.display()
            )
        })?;
        let identity = (meta.dev(), meta.ino());
        let (ours, theirs) = ctdb::common::spawn::socketpair_cloexec()
            .map_err(|e| format!("socketpair() failed ({e})"))?;
        let holder = getpid();
        // SAFETY: this program is single-threaded, so the child may run ordinary code.
        match unsafe { fork() }.map_err(|e| format!("fork() failed ({e})"))? {
            ForkResult::Child => {
                drop(ours);
                // Closing the child's copy of the lock fd is harmless: fcntl locks belong to
                // the process that took them, and the child holds none.
                let _ = nix::unistd::close(lock.as_raw_fd());
                if let Some(signals) = signals {
                    let _ = nix::unistd::close(signals.as_raw_fd());
                }
                let code = CheckerChild {
                    progname: &self.progname,
                    lock_path: &self.lock_path,
                    identity,
                    recheck: Duration::from_secs(self.args.recheck_interval),
                    pings: self.args.ping_timeout > 0,
                    socket: File::from(theirs),
                    clock: self.clock,
                }
                .run(holder);
                // SAFETY: leaves the forked child without running the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Checker {
                    pid: child,
                    socket: File::from(ours),
                })
            }
        }
    }

    /// Waits for a reason to let go of the lock.
    fn exit_signals(&self) -> Option<SignalFd> {
        match block_exit_signals() {
            Ok(fd) => Some(fd),
            Err(e) => {
                // Without the signalfd the default actions still end the process, and the
                // kernel drops the lock with it.
                let _ = exit_signal_set().thread_unblock();
                eprintln!(
                    "{}: signalfd failed ({e}), using default signal actions",
                    self.progname
                );
                None
            }
        }
    }

    fn hold(&self, checker: Option<&Checker>, signals: Option<&SignalFd>) -> ExitReason {
        let stdout = std::io::stdout();
        let mut watch_stdout = true;
        let ping_timeout = Duration::from_secs(self.args.ping_timeout);
        let mut ping_deadline: Option<Instant> = match checker {
            Some(_) if self.args.ping_timeout > 0 => {
                Some(self.clock.now().saturating_add(ping_timeout))
            }
            _ => None,
        };
        loop {
            if getppid() != self.parent {
                return ExitReason::ParentGone("re-parented");
            }
            let now = self.clock.now();
            let mut wait = PARENT_RECHECK;
            if let Some(deadline) = ping_deadline {
                if now >= deadline {
                    return ExitReason::PingTimeout;
                }
                wait = wait.min(deadline.saturating_since(now));
            }

            let mut fds = Vec::with_capacity(3);
            // No requested events: POLLERR and POLLHUP are always reported, and on the write
            // end of a pipe POLLERR means the last reader has gone.
            let stdout_index = watch_stdout.then(|| {
                fds.push(PollFd::new(stdout.as_fd(), PollFlags::empty()));
                fds.len() - 1
            });
            let signal_index = signals.map(|s| {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let checker_index = checker.map(|c| {
                fds.push(PollFd::new(c.socket.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            match poll(&mut fds, poll_timeout(wait)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return ExitReason::Failure(format!("poll() failed ({e})")),
            }
            let revents = |index: Option<usize>| {
                index
                    .and_then(|i| fds[i].revents())
                    .unwrap_or(PollFlags::empty())
            };

            let out = revents(stdout_index);
            if out.contains(PollFlags::POLLNVAL) {
                // No stdout at all (closed by whoever started us): nothing to watch there.
                watch_stdout = false;
            } else if out.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                return ExitReason::ParentGone("result pipe closed");
            }

            if !revents(signal_index).is_empty() {
                if let Some(Ok(Some(info))) = signals.map(SignalFd::read_signal) {
                    return ExitReason::Signal(i32::try_from(info.ssi_signo).unwrap_or(0));
                }
            }

            if let (Some(checker), false) = (checker, revents(checker_index).is_empty()) {
                let mut buf = [0u8; 64];
                match (&checker.socket).read(&mut buf) {
                    Ok(0) => return ExitReason::CheckerDone,
                    Ok(_) => {
                        ping_deadline =
                            ping_deadline.map(|_| self.clock.now().saturating_add(ping_timeout));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return ExitReason::CheckerDone,
                }
            }
        }
    }
}

/// The lock holder's view of its checker process.
struct Checker {
    pid: Pid,
    /// Pings arrive here; EOF means the checker has exited.
    socket: File,
}

impl Checker {
    /// Kills the checker (it may be stuck in a blocking lock) and reaps it if that is quick;
    /// otherwise init inherits it.
    fn stop(self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        drop(self.socket);
        let clock = MonotonicClock::new();
        let give_up = clock.now().saturating_add(CHECKER_REAP_WAIT);
        while clock.now() < give_up {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => return,
            }
        }
    }
}

struct CheckerChild<'a> {
    progname: &'a str,
    lock_path: &'a std::path::Path,
    identity: (u64, u64),
    recheck: Duration,
    pings: bool,
    /// The holder's end is never written to; readability means it has closed.
    socket: File,
    clock: MonotonicClock,
}

impl CheckerChild<'_> {
    fn run(&self, holder: Pid) -> i32 {
        // Die with the lock holder, even when stuck in the blocking lock below.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if getppid() != holder {
            return 0;
        }
        let _ = SigSet::empty().thread_set_mask();
        // Never keep the parent's result pipe open: its EOF is how ctdbd learns the lock is
        // gone, and that must not wait for this process.
        match File::open("/dev/null") {
            Ok(null) => {
                let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
            }
            Err(_) => {
                let _ = nix::unistd::close(1);
            }
        }

        let mut next_check = self.clock.now().saturating_add(self.recheck);
        let mut next_ping = self.clock.now().saturating_add(PING_INTERVAL);
        loop {
            let now = self.clock.now();
            if self.pings && now >= next_ping {
                if (&self.socket).write_all(b"p").is_err() {
                    return 0;
                }
                next_ping = now.saturating_add(PING_INTERVAL);
            }
            if now >= next_check {
                if let Err(message) = self.check() {
                    eprintln!("{}: {message}", self.progname);
                    return 0;
                }
                next_check = self.clock.now().saturating_add(self.recheck);
            }

            let now = self.clock.now();
            let mut wake = next_check;
            if self.pings {
                wake = wake.min(next_ping);
            }
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, poll_timeout(wake.saturating_since(now))) {
                Ok(0) | Err(Errno::EINTR) => {}
                // The holder never writes: anything readable is its end closing.
                Ok(_) => return 0,
                Err(_) => return 1,
            }
        }
    }

    /// One re-check of the lock file, as in stock's `lock_io_check_loop`.
    fn check(&self) -> Result<(), String> {
        let path = self.lock_path.display();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.lock_path)
            .map_err(|e| {
                format!(
                    "lock lost - lock file \"{path}\" open failed (ret={})",
                    e.raw_os_error().unwrap_or(0)
                )
            })?;
        let meta = file.metadata().map_err(|e| {
            format!(
                "lock lost - lock file \"{path}\" check failed (ret={})",
                e.raw_os_error().unwrap_or(0)
            )
        })?;
        if (meta.dev(), meta.ino()) != self.identity {
            return Err(format!("lock lost - lock file \"{path}\" inode changed"));
        }
        // Blocking on purpose: a cluster filesystem in trouble stalls here, the pings stop, and
        // the holder's ping timeout fires. Closing the file drops this second lock again.
        lock_byte(&file, 1, true).map_err(|e| {
            format!(
                "lock fail - lock file \"{path}\" test lock error ({})",
                e as i32
            )
        })
    }
}

/// An fcntl write lock on one byte at `start`.
fn lock_byte(file: &File, start: i64, block: bool) -> Result<(), Errno> {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        l_pid: 0,
    };
    loop {
        let arg = if block {
            FcntlArg::F_SETLKW(&lock)
        } else {
            FcntlArg::F_SETLK(&lock)
        };
        match fcntl(file.as_raw_fd(), arg) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) if block => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes the one-character answer. Failures are ignored like in stock: if the parent is
/// already gone, the hold loop notices at once.
fn write_result(result: ClusterMutexResult) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&[result.to_byte()]);
    let _ = out.flush();
}

fn exit_signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in EXIT_SIGNALS {
        set.add(signal);
    }
    set
}

fn block_exit_signals() -> nix::Result<SignalFd> {
    let set = exit_signal_set();
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// A poll timeout for `wait`, rounded up to whole milliseconds so that a deadline a fraction of
/// a millisecond away does not spin.
fn poll_timeout(wait: Duration) -> PollTimeout {
    let millis = wait.as_micros().div_ceil(1000);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}
