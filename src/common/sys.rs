//! The daemon's thin layer over the operating system: pid file, the unix socket, peer
//! credentials, signals and forking into the background.
//!
//! Everything here is a syscall wrapper with an error that names the operation and the path, so
//! that start-up failures read like stock ctdbd's ("Unable to bind on ctdb socket ...").

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{lstat, Mode, SFlag};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A failed system operation: what was attempted, on what, and the OS error.
#[derive(Debug)]
pub struct SysError {
    pub op: &'static str,
    pub path: Option<PathBuf>,
    pub source: std::io::Error,
}

impl SysError {
    fn new(op: &'static str, path: Option<&Path>, source: std::io::Error) -> Self {
        SysError {
            op,
            path: path.map(Path::to_path_buf),
            source,
        }
    }
    fn errno(op: &'static str, path: Option<&Path>, errno: Errno) -> Self {
        Self::new(op, path, std::io::Error::from_raw_os_error(errno as i32))
    }
}

impl std::fmt::Display for SysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{} '{}': {}", self.op, p.display(), self.source),
            None => write!(f, "{}: {}", self.op, self.source),
        }
    }
}

impl std::error::Error for SysError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A pid file held with an fcntl write lock for the life of the daemon, as stock's
/// `pidfile_context_create` does; a second daemon with the same pid file fails to start.
/// Dropping it removes the file.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, SysError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| SysError::new("open pid file", Some(path), e))?;
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        fcntl(file.as_raw_fd(), FcntlArg::F_SETLK(&lock)).map_err(|e| {
            SysError::errno("lock pid file (is ctdbd already running?)", Some(path), e)
        })?;
        file.set_len(0)
            .map_err(|e| SysError::new("truncate pid file", Some(path), e))?;
        writeln!(file, "{}", std::process::id())
            .map_err(|e| SysError::new("write pid file", Some(path), e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Rewrites the pid, for use after forking into the background.
    pub fn update_pid(&mut self) -> Result<(), SysError> {
        self.file
            .set_len(0)
            .map_err(|e| SysError::new("truncate pid file", Some(&self.path), e))?;
        let mut f = &self.file;
        std::io::Seek::rewind(&mut f)
            .map_err(|e| SysError::new("seek pid file", Some(&self.path), e))?;
        writeln!(f, "{}", std::process::id())
            .map_err(|e| SysError::new("write pid file", Some(&self.path), e))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the daemon's unix socket at `path` with mode 0700 and a backlog of 100.
///
/// A leftover socket from a dead daemon is replaced; anything else at that path (a symlink, a
/// regular file, or a socket some live process still answers on) is an error, so a crafted
/// path can never make the daemon unlink or chmod something it should not.
pub fn bind_unix_socket(path: &Path) -> Result<UnixListener, SysError> {
    match lstat(path) {
        Ok(st) => {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind != SFlag::S_IFSOCK {
                return Err(SysError::errno(
                    "refusing to replace non-socket",
                    Some(path),
                    Errno::EEXIST,
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(SysError::errno(
                    "another daemon is listening on ctdb socket",
                    Some(path),
                    Errno::EADDRINUSE,
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| SysError::new("remove stale ctdb socket", Some(path), e))?;
        }
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(SysError::errno("stat ctdb socket", Some(path), e)),
    }
    // The socket is created with the umask applied, then narrowed before listen(): until
    // listen() no client can connect, so there is no window with wider permissions.
    let listener = bind_without_listen(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| SysError::new("chmod ctdb socket", Some(path), e))?;
    // SAFETY: `listener` owns a valid socket fd for the duration of the call.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 100) };
    if rc != 0 {
        return Err(SysError::new(
            "listen on ctdb socket",
            Some(path),
            std::io::Error::last_os_error(),
        ));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| SysError::new("set ctdb socket non-blocking", Some(path), e))?;
    Ok(listener)
}

fn bind_without_listen(path: &Path) -> Result<UnixListener, SysError> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| SysError::errno("create unix socket", Some(path), e))?;
    let addr = UnixAddr::new(path).map_err(|e| SysError::errno("socket path", Some(path), e))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| SysError::errno("bind ctdb socket", Some(path), e))?;
    Ok(UnixListener::from(fd))
}

/// Credentials of the process at the other end of a unix stream socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer_cred(sock: &impl AsRawFd) -> Result<PeerCred, SysError> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    // SAFETY: the caller's socket stays open for the duration of this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock.as_raw_fd()) };
    let cred =
        getsockopt(&fd, PeerCredentials).map_err(|e| SysError::errno("SO_PEERCRED", None, e))?;
    Ok(PeerCred {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// Blocks the daemon's signals and returns a non-blocking signalfd that reports them, so that
/// signals arrive as ordinary events in the loop.
///
/// Each signal's action is first reset to the default: a signal ignored by whoever started
/// us (a shell ignores SIGINT and SIGQUIT for background jobs) would otherwise be discarded
/// instead of reaching the signalfd, and an ignored SIGCHLD would reap our children before
/// we could. Stock installs handlers for the same signals, which has the same effect, and
/// its children, like ours, start with the default actions.
pub fn signal_fd(signals: &[Signal]) -> Result<SignalFd, SysError> {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(s);
    }
    // Blocked first, so that a signal arriving in between cannot take its default action.
    set.thread_block()
        .map_err(|e| SysError::errno("block signals", None, e))?;
    for &s in signals {
        // SAFETY: SIG_DFL installs no handler, so no code of ours runs in signal context;
        // the signal is blocked and only ever read from the signalfd.
        unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl) }
            .map_err(|e| SysError::errno("reset signal action", None, e))?;
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SysError::errno("signalfd", None, e))
}

/// Ignores SIGPIPE (writes to a closed socket return EPIPE instead) as stock ctdbd does.
pub fn ignore_sigpipe() -> Result<(), SysError> {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: installing SIG_IGN has no handler code that could run concurrently.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(|e| SysError::errno("ignore SIGPIPE", None, e))
}

/// Makes this process real-time (`SCHED_FIFO`, priority 1) as stock ctdbd does with
/// `[legacy] realtime scheduling` (its `set_scheduler`), so that the daemon is not queued
/// behind busy smbd processes. `SCHED_RESET_ON_FORK` gives every child (eventd, the recovery
/// daemon, helpers, scripts) the normal policy again, as stock's `ctdb_fork` resets it.
pub fn set_realtime_scheduler() -> Result<(), SysError> {
    let param = libc::sched_param { sched_priority: 1 };
    let policy = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is this
    // process.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == -1 {
        return Err(SysError::new(
            "sched_setscheduler",
            None,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Whether stdin is a pipe: in test mode stock ctdbd shuts down when such a stdin reaches EOF.
pub fn stdin_is_fifo() -> bool {
    nix::sys::stat::fstat(0)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
        .unwrap_or(false)
}

/// Forks into the background. The parent exits at once with status 0; the child returns.
/// Without `keep_stdin` the child also starts a new session and points stdin at /dev/null,
/// as `become_daemon` does; in test mode stock only forks and keeps stdin.
pub fn daemonize(keep_stdin: bool) -> Result<(), SysError> {
    use nix::unistd::{fork, setsid, ForkResult};
    // SAFETY: the daemon is single-threaded at this point, so the child may keep running Rust
    // code after fork.
    match unsafe { fork() }.map_err(|e| SysError::errno("fork", None, e))? {
        ForkResult::Parent { .. } => {
            // SAFETY: _exit skips atexit handlers and buffered output shared with the child.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {}
    }
    if !keep_stdin {
        setsid().map_err(|e| SysError::errno("setsid", None, e))?;
        let devnull = OpenOptions::new()
            .read(true)
            .open("/dev/null")
            .map_err(|e| SysError::new("open", Some(Path::new("/dev/null")), e))?;
        nix::unistd::dup2(devnull.as_raw_fd(), 0)
            .map_err(|e| SysError::errno("dup2 stdin", None, e))?;
    }
    Ok(())
}

/// Sets or clears O_NONBLOCK on a raw fd.
pub fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> Result<(), SysError> {
    use nix::fcntl::OFlag;
    let raw = fd.as_raw_fd();
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(|e| SysError::errno("F_GETFL", None, e))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(raw, FcntlArg::F_SETFL(flags)).map_err(|e| SysError::errno("F_SETFL", None, e))?;
    Ok(())
}

/// Creates a directory (and its parents) with `mode` if it does not exist.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<(), SysError> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| SysError::new("create directory", Some(path), e))
}

/// For tests: the file mode bits of `path`.
pub fn file_mode(path: &Path) -> Option<u32> {
    lstat(path).ok().map(|st| st.st_mode & Mode::all().bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field 41 of `/proc/<pid>/stat`: the scheduling policy (0 normal, 1 FIFO).
    fn policy_in_stat(stat: &str) -> Option<u32> {
        let after_comm = &stat[stat.rfind(')')? + 2..];
        after_comm.split(' ').nth(38)?.parse().ok()
    }

    /// Body of [`realtime_scheduler_is_fifo_and_children_start_normal`], run in a child
    /// process so that the test binary keeps its own policy.
    #[test]
    fn realtime_child() {
        if std::env::var_os("CTDB_RS_SYS_TEST_CHILD").is_none() {
            return;
        }
        set_realtime_scheduler().unwrap();
        // The test harness runs this on a thread of its own; ctdbd has only one.
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let child = std::process::Command::new("cat")
            .arg("/proc/self/stat")
            .output()
            .unwrap();
        let child = String::from_utf8(child.stdout).unwrap();
        println!(
            "POLICIES {:?} {:?}",
            policy_in_stat(&own),
            policy_in_stat(&child)
        );
    }

    #[test]
    fn realtime_scheduler_is_fifo_and_children_start_normal() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: setting SCHED_FIFO needs root");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "common::sys::tests::realtime_child",
                "--exact",
                "--nocapture",
            ])
            .env("CTDB_RS_SYS_TEST_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("POLICIES Some(1) Some(0)"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ctdb-rs-sys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn socket_is_0700_and_stale_socket_replaced_but_live_one_refused() {
        let dir = temp_dir("sock");
        let path = dir.join("ctdbd.socket");
        let first = bind_unix_socket(&path).unwrap();
        assert_eq!(file_mode(&path), Some(0o700));
        assert!(
            bind_unix_socket(&path).is_err(),
            "a live socket must not be replaced"
        );
        drop(first);
        // Other tests of this process spawn children; one forked just now holds a copy of the
        // listener until it execs (close-on-exec), and the socket answers until then.
        let mut attempts_left = 200; // 10 ms apart: 2 s
        let _second = loop {
            attempts_left -= 1;
            match bind_unix_socket(&path) {
                Ok(listener) => break listener,
                Err(e) if attempts_left > 0 => {
                    assert_eq!(e.source.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("stale socket not replaced: {e}"),
            }
        };
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlink_and_regular_file_are_never_replaced() {
        let dir = temp_dir("link");
        let target = dir.join("precious");
        std::fs::write(&target, b"data").unwrap();
        let link = dir.join("ctdbd.socket");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(bind_unix_socket(&link).is_err());
        assert!(bind_unix_socket(&target).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pid_file_holds_our_pid_and_is_removed_on_drop() {
        let dir = temp_dir("pid");
        let path = dir.join("ctdbd.pid");
        let pf = PidFile::create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(pf);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn peer_cred_reports_our_own_pid() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_cred(&a).unwrap();
        assert_eq!(cred.pid, i32::try_from(std::process::id()).unwrap());
    }
}
