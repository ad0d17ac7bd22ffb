//! The daemon's end of a cluster mutex helper (mirrors `ctdb/server/ctdb_cluster_mutex.c`).
//!
//! A helper is started with its stdout on a pipe. Its first byte is the answer (`'0'` taken,
//! `'1'` contended, `'3'` error, anything else an unknown error; no byte at all counts as
//! `'3'`), a timer synthesises `'2'` if no answer comes in time, and after `'0'` the pipe's EOF
//! means the helper has exited and the lock is lost.
//!
//! [`MutexTracker`] is that logic with no I/O: it takes what a read returned and the current
//! time and returns events. [`ClusterMutex`] is the thin part that owns the process and the
//! pipe; the caller registers [`ClusterMutex::read_fd`] with its poller, calls
//! [`ClusterMutex::on_readable`] when it is readable and [`ClusterMutex::check_timeout`] when
//! [`ClusterMutex::deadline`] passes, and reaps the helper's pid from its SIGCHLD handling.
//!
//! Releasing sends SIGTERM and, unlike stock, escalates to SIGKILL when the helper is still
//! there after a grace period ([`ReleasingHelper`]), so a helper that ignores SIGTERM can
//! neither hang the daemon nor keep the lock.

use crate::common::clock::Instant;
use crate::common::spawn::{pipe_cloexec, Child, Spawn, SpawnError};
use crate::protocol::helper::{cluster_mutex_argv, ClusterMutexResult, HelperArgError};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// Timeout the recovery daemon uses when it wants to hold the lock (`ctdb_recoverd.c`).
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout ctdbd uses when `SET_RECMODE(NORMAL)` tests that someone else holds the lock.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a released helper gets between SIGTERM and SIGKILL.
pub const DEFAULT_RELEASE_GRACE: Duration = Duration::from_secs(5);

/// What the caller learns about a helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMutexEvent {
    /// The helper's answer, or [`ClusterMutexResult::Timeout`] when the timer expired first.
    /// `latency` is the time since the helper was started. Reported once.
    Result {
        result: ClusterMutexResult,
        latency: Duration,
    },
    /// After [`ClusterMutexResult::Taken`]: the helper has gone, and the lock with it.
    Lost,
}

/// What one `read()` of the helper's pipe returned (`EAGAIN` and `EINTR` are not reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeRead<'a> {
    Data(&'a [u8]),
    Eof,
    /// A read error, with its errno.
    Error(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No answer yet.
    Waiting,
    /// Answered `'0'`: the helper holds the lock.
    Holding,
    /// Nothing more will be reported: another answer, a timeout, or the lock was lost.
    Finished,
}

/// The protocol of one helper, without I/O.
#[derive(Debug, Clone)]
pub struct MutexTracker {
    started: Instant,
    deadline: Option<Instant>,
    phase: Phase,
}

impl MutexTracker {
    /// `timeout` of `None` waits for the answer for ever (stock's timeout 0).
    pub fn new(now: Instant, timeout: Option<Duration>) -> Self {
        MutexTracker {
            started: now,
            deadline: timeout.map(|t| now.saturating_add(t)),
            phase: Phase::Waiting,
        }
    }

    /// When [`MutexTracker::check_timeout`] must run next, if it must.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting => self.deadline,
            Phase::Holding | Phase::Finished => None,
        }
    }

    /// Whether the helper has answered `'0'` and not been lost since.
    pub fn is_holding(&self) -> bool {
        self.phase == Phase::Holding
    }

    /// Whether any further input can still produce an event.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    pub fn on_read(&mut self, read: PipeRead<'_>, now: Instant) -> Option<ClusterMutexEvent> {
        match (self.phase, read) {
            (Phase::Waiting, PipeRead::Data([])) => None,
            (Phase::Waiting, PipeRead::Data([first, ..])) => {
                // Only the first byte counts; stock reads one byte and ignores later output.
                let result = ClusterMutexResult::from_byte(*first);
                Some(self.answer(result, now))
            }
            // EOF or an error before any byte: the helper died without answering.
            (Phase::Waiting, PipeRead::Eof | PipeRead::Error(_)) => {
                Some(self.answer(ClusterMutexResult::Error, now))
            }
            (Phase::Holding, PipeRead::Data(_)) => None,
            // Stock ignores read errors here; a lock holder that can no longer be watched is
            // treated as lost instead, so that the leader gives up rather than trusting it.
            (Phase::Holding, PipeRead::Eof | PipeRead::Error(_)) => {
                self.phase = Phase::Finished;
                Some(ClusterMutexEvent::Lost)
            }
            (Phase::Finished, _) => None,
        }
    }

    /// Reports [`ClusterMutexResult::Timeout`] once `now` reaches the deadline without an
    /// answer. A late answer after that is ignored: both stock callers drop the handle on
    /// timeout.
    pub fn check_timeout(&mut self, now: Instant) -> Option<ClusterMutexEvent> {
        match (self.phase, self.deadline) {
            (Phase::Waiting, Some(deadline)) if now >= deadline => {
                Some(self.answer(ClusterMutexResult::Timeout, now))
            }
            _ => None,
        }
    }

    fn answer(&mut self, result: ClusterMutexResult, now: Instant) -> ClusterMutexEvent {
        self.phase = if result == ClusterMutexResult::Taken {
            Phase::Holding
        } else {
            Phase::Finished
        };
        ClusterMutexEvent::Result {
            result,
            latency: now.saturating_since(self.started),
        }
    }
}

/// Why a helper could not be started.
#[derive(Debug)]
pub enum ClusterMutexError {
    /// The `cluster lock` setting gave no command.
    Args(HelperArgError),
    Spawn(SpawnError),
}

impl fmt::Display for ClusterMutexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterMutexError::Args(e) => write!(f, "cluster mutex helper arguments: {e}"),
            ClusterMutexError::Spawn(e) => write!(f, "starting cluster mutex helper: {e}"),
        }
    }
}

impl std::error::Error for ClusterMutexError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterMutexError::Args(e) => Some(e),
            ClusterMutexError::Spawn(e) => Some(e),
        }
    }
}

impl From<SpawnError> for ClusterMutexError {
    fn from(e: SpawnError) -> Self {
        ClusterMutexError::Spawn(e)
    }
}

/// Checks at start-up that the default helper exists and is executable by its owner, as stock
/// does before first use (stock exits the daemon if not).
pub fn check_helper(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "Unable to set cluster mutex helper \"{}\" - {e}",
            path.display()
        )
    })?;
    if meta.permissions().mode() & 0o100 == 0 {
        return Err(format!(
            "Unable to set cluster_mutex helper \"{}\" - not executable",
            path.display()
        ));
    }
    Ok(())
}

/// A running helper and the read end of its stdout pipe.
#[derive(Debug)]
pub struct ClusterMutex {
    /// Always `Some` until [`ClusterMutex::release`] hands it on.
    child: Option<Child>,
    /// Non-blocking, close-on-exec. `None` once EOF or an error was seen.
    pipe: Option<File>,
    tracker: MutexTracker,
}

impl ClusterMutex {
    /// Starts the helper for a `[cluster] cluster lock` value: `!cmd args...` runs `cmd`
    /// directly (split on blanks, no shell), anything else runs `helper_path` with the value as
    /// its one argument. `helper_path` is the fcntl helper or `$CTDB_CLUSTER_MUTEX_HELPER`
    /// (see `common::path`).
    pub fn start(
        argstring: &str,
        helper_path: &str,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<ClusterMutex, ClusterMutexError> {
        let argv = cluster_mutex_argv(argstring, helper_path).map_err(ClusterMutexError::Args)?;
        Self::start_argv(&argv, None, timeout, now)
    }

    /// Starts a helper from a ready-made argv (`argv[0]` is the program path). Its stderr is
    /// ours unless `stderr` names another fd (a log pipe, say).
    pub fn start_argv(
        argv: &[String],
        stderr: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<ClusterMutex, ClusterMutexError> {
        let (read_end, write_end) = pipe_cloexec()?;
        let pipe = File::from(read_end);
        crate::common::sys::set_nonblocking(&pipe, true).map_err(|e| {
            ClusterMutexError::Spawn(SpawnError::Os {
                op: "set helper pipe non-blocking",
                source: e.source,
            })
        })?;
        let mut spawn = Spawn::from_argv(argv)?;
        spawn.map_fd(write_end.as_fd(), libc::STDOUT_FILENO);
        if let Some(stderr) = stderr {
            spawn.map_fd(stderr, libc::STDERR_FILENO);
        }
        let child = spawn.spawn_child()?;
        // Only the helper may hold the write end, or its exit would never read as EOF.
        drop(write_end);
        Ok(ClusterMutex {
            child: Some(child),
            pipe: Some(pipe),
            tracker: MutexTracker::new(now, timeout),
        })
    }

    /// The helper's pid, for the caller's child reaping.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, Child::pid)
    }

    /// The pipe to watch for readability; `None` once it has reached EOF (deregister it then).
    pub fn read_fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    pub fn pipe(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().map(AsFd::as_fd)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.tracker.deadline()
    }

    pub fn is_holding(&self) -> bool {
        self.tracker.is_holding()
    }

    pub fn tracker(&self) -> &MutexTracker {
        &self.tracker
    }

    /// Drains the pipe (it is non-blocking, so this suits edge-triggered polling) and returns
    /// what happened, in order: at most an answer and then a loss.
    pub fn on_readable(&mut self, now: Instant) -> Vec<ClusterMutexEvent> {
        let mut events = Vec::new();
        let mut buf = [0u8; 64];
        while let Some(pipe) = self.pipe.as_mut() {
            let read = match pipe.read(&mut buf) {
                Ok(0) => PipeRead::Eof,
                Ok(n) => PipeRead::Data(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => PipeRead::Error(e.raw_os_error().unwrap_or(0)),
            };
            let ended = !matches!(read, PipeRead::Data(_));
            events.extend(self.tracker.on_read(read, now));
            if ended {
                self.pipe = None;
            }
        }
        events
    }

    pub fn check_timeout(&mut self, now: Instant) -> Option<ClusterMutexEvent> {
        self.tracker.check_timeout(now)
    }

    /// Lets go of the lock (or of the attempt): closes the pipe, which our fcntl helper
    /// notices at once, and sends SIGTERM. The returned handle sends SIGKILL if the helper has
    /// not been reaped within `grace`; the caller keeps it until its SIGCHLD handling reaps
    /// [`ReleasingHelper::pid`].
    pub fn release(mut self, now: Instant, grace: Duration) -> ReleasingHelper {
        self.pipe = None;
        let Some(child) = self.child.take() else {
            unreachable!("only release takes the child, and it consumes the handle")
        };
        if let Err(e) = child.signal(libc::SIGTERM) {
            log::warn!("cluster mutex helper {}: {e}", child.pid());
        }
        ReleasingHelper {
            child,
            kill_at: Some(now.saturating_add(grace)),
        }
    }
}

impl Drop for ClusterMutex {
    fn drop(&mut self) {
        // Like stock's destructor: a handle that goes away must not leave the lock held.
        if let Some(child) = &self.child {
            let _ = child.signal(libc::SIGTERM);
        }
    }
}

/// A helper that was told to let go and is expected to exit.
#[derive(Debug)]
pub struct ReleasingHelper {
    child: Child,
    /// `None` once SIGKILL has been sent.
    kill_at: Option<Instant>,
}

impl ReleasingHelper {
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// When [`ReleasingHelper::check_timeout`] must run, until SIGKILL has been sent.
    pub fn deadline(&self) -> Option<Instant> {
        self.kill_at
    }

    /// Sends SIGKILL once the grace period is over. Returns whether it did now.
    pub fn check_timeout(&mut self, now: Instant) -> bool {
        match self.kill_at {
            Some(at) if now >= at => {
                self.kill_at = None;
                log::warn!(
                    "cluster mutex helper {} ignored SIGTERM, killing it",
                    self.child.pid()
                );
                if let Err(e) = self.child.signal(libc::SIGKILL) {
                    log::warn!("cluster mutex helper {}: {e}", self.child.pid());
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClusterMutexResult::*;

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn result(result: ClusterMutexResult, latency_ms: u64) -> Option<ClusterMutexEvent> {
        Some(ClusterMutexEvent::Result {
            result,
            latency: Duration::from_millis(latency_ms),
        })
    }

    #[test]
    fn taken_then_lost_on_eof() {
        let mut t = MutexTracker::new(at(1000), Some(Duration::from_secs(5)));
        assert_eq!(t.deadline(), Some(at(6000)));
        assert_eq!(t.check_timeout(at(5999)), None);
        assert_eq!(
            t.on_read(PipeRead::Data(b"0"), at(1250)),
            result(Taken, 250)
        );
        assert!(t.is_holding());
        assert_eq!(t.deadline(), None, "no timer while holding");
        assert_eq!(t.check_timeout(at(99_000)), None);
        assert_eq!(t.on_read(PipeRead::Data(b"chatter"), at(2000)), None);
        assert_eq!(
            t.on_read(PipeRead::Eof, at(3000)),
            Some(ClusterMutexEvent::Lost)
        );
        assert!(t.is_finished() && !t.is_holding());
        assert_eq!(
            t.on_read(PipeRead::Eof, at(3001)),
            None,
            "lost is reported once"
        );
    }

    #[test]
    fn only_the_first_byte_counts() {
        let mut t = MutexTracker::new(at(0), None);
        assert_eq!(t.on_read(PipeRead::Data(b"01"), at(1)), result(Taken, 1));
        let mut t = MutexTracker::new(at(0), None);
        assert_eq!(
            t.on_read(PipeRead::Data(b"10"), at(1)),
            result(Contended, 1)
        );
        assert_eq!(t.on_read(PipeRead::Data(b"0"), at(2)), None);
        assert_eq!(
            t.on_read(PipeRead::Eof, at(3)),
            None,
            "no loss without a lock"
        );
    }

    #[test]
    fn answers_map_like_stock() {
        for (byte, expected) in [
            (b'0', Taken),
            (b'1', Contended),
            (b'2', Timeout),
            (b'3', Error),
            (b'x', Unknown(b'x')),
        ] {
            let mut t = MutexTracker::new(at(0), Some(Duration::from_secs(1)));
            assert_eq!(
                t.on_read(PipeRead::Data(&[byte]), at(10)),
                result(expected, 10)
            );
            assert_eq!(t.is_holding(), expected == Taken);
            assert_eq!(t.check_timeout(at(5000)), None, "answered: no timeout");
        }
    }

    #[test]
    fn silent_death_is_an_error() {
        let mut t = MutexTracker::new(at(0), Some(Duration::from_secs(1)));
        assert_eq!(t.on_read(PipeRead::Data(b""), at(1)), None);
        assert_eq!(t.on_read(PipeRead::Eof, at(7)), result(Error, 7));
        let mut t = MutexTracker::new(at(0), None);
        assert_eq!(
            t.on_read(PipeRead::Error(libc::EIO), at(7)),
            result(Error, 7)
        );
    }

    #[test]
    fn timeout_is_synthesised_once_and_late_answers_ignored() {
        let mut t = MutexTracker::new(at(100), Some(Duration::from_millis(500)));
        assert_eq!(t.check_timeout(at(599)), None);
        assert_eq!(t.check_timeout(at(600)), result(Timeout, 500));
        assert_eq!(t.check_timeout(at(700)), None);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.on_read(PipeRead::Data(b"0"), at(800)), None);
        assert!(!t.is_holding());
        assert_eq!(t.on_read(PipeRead::Eof, at(900)), None);
    }

    #[test]
    fn no_timeout_means_waiting_for_ever() {
        let mut t = MutexTracker::new(at(0), None);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.check_timeout(Instant::from_micros(u64::MAX)), None);
        assert_eq!(
            t.on_read(PipeRead::Data(b"1"), at(10)),
            result(Contended, 10)
        );
    }

    #[test]
    fn read_error_while_holding_counts_as_lost() {
        let mut t = MutexTracker::new(at(0), None);
        t.on_read(PipeRead::Data(b"0"), at(1));
        assert_eq!(
            t.on_read(PipeRead::Error(libc::EIO), at(2)),
            Some(ClusterMutexEvent::Lost)
        );
    }

    /// Random interleavings of inputs: at most one answer, a loss only after `Taken`, nothing
    /// after the tracker finishes, and the deadline only while waiting.
    #[test]
    fn event_invariants_hold_for_random_inputs() {
        use crate::testing::{seeds, Prng};
        for seed in seeds(500) {
            let mut rng = Prng::new(seed);
            let timeout = match rng.below(3) {
                0 => None,
                _ => Some(Duration::from_millis(rng.below(1000))),
            };
            let mut t = MutexTracker::new(at(0), timeout);
            let mut now = 0;
            let mut answers = Vec::new();
            let mut lost = 0;
            for _ in 0..rng.below(12) {
                now += rng.below(300);
                let data = [b'0' + u8::try_from(rng.below(5)).unwrap()];
                let event = match rng.below(4) {
                    0 => t.on_read(PipeRead::Data(&data), at(now)),
                    1 => t.on_read(PipeRead::Eof, at(now)),
                    2 => t.on_read(PipeRead::Error(libc::EIO), at(now)),
                    _ => {
                        let event = t.check_timeout(at(now));
                        if event.is_some() {
                            let timeout = timeout.unwrap();
                            assert!(now >= u64::try_from(timeout.as_millis()).unwrap());
                        }
                        event
                    }
                };
                match event {
                    Some(ClusterMutexEvent::Result { result, .. }) => answers.push(result),
                    Some(ClusterMutexEvent::Lost) => {
                        assert_eq!(answers, [Taken], "seed {seed}: lost without taken");
                        lost += 1;
                    }
                    None => {}
                }
                if t.deadline().is_some() {
                    assert!(answers.is_empty(), "seed {seed}: deadline after answer");
                }
            }
            assert!(answers.len() <= 1, "seed {seed}: {answers:?}");
            assert!(lost <= 1, "seed {seed}");
        }
    }

    #[test]
    fn missing_helper_is_reported() {
        let dir = std::env::temp_dir().join(format!("ctdb-rs-cm-{}", std::process::id()));
        assert!(check_helper(&dir.join("nope")).is_err());
        assert!(check_helper(std::path::Path::new("/bin/sh")).is_ok());
        assert!(matches!(
            ClusterMutex::start("!  \t", "/bin/false", None, at(0)),
            Err(ClusterMutexError::Args(HelperArgError::EmptyCommand))
        ));
        assert!(matches!(
            ClusterMutex::start("!/nonexistent/helper x", "/bin/false", None, at(0)),
            Err(ClusterMutexError::Spawn(_))
        ));
    }
}
