//! Starting helper programs with `posix_spawn` (the exec half of `ctdb/server/ctdb_fork.c`
//! plus the `execv` calls in `ctdb_cluster_mutex.c`, `ctdb_recoverd.c:helper_run` and
//! `eventscript.c`).
//!
//! ctdbd blocks the signals it reads through its signalfd and ignores SIGPIPE; both would be
//! inherited across `exec` and silently break helpers (a helper that can never see SIGTERM cannot
//! be released). Every spawn therefore resets the signal mask and puts every signal back to its
//! default action.
//!
//! File descriptors: every fd the daemon opens is `O_CLOEXEC`. On top of that a spawn closes
//! everything above the highest mapped target (`posix_spawn_file_actions_addclosefrom_np`, glibc
//! 2.34+) and every unmapped fd between 3 and that target, so a child sees exactly fds 0, 1 and 2
//! (inherited unless remapped or closed) plus the fds mapped with [`Spawn::map_fd`].

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Why a child could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// An argument, environment entry or the program path contains a NUL byte.
    NulByte(OsString),
    /// A target fd was negative or mapped twice.
    BadFdMap(RawFd),
    /// argv is empty: there is no program to run.
    NoProgram,
    /// A step of setting up or performing the spawn failed.
    Os {
        op: &'static str,
        source: std::io::Error,
    },
}

impl SpawnError {
    fn os(op: &'static str, code: i32) -> Self {
        SpawnError::Os {
            op,
            source: std::io::Error::from_raw_os_error(code),
        }
    }

    fn last_os(op: &'static str) -> Self {
        SpawnError::Os {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NulByte(text) => write!(f, "NUL byte in {:?}", text),
            SpawnError::BadFdMap(fd) => write!(f, "invalid or duplicate target fd {fd}"),
            SpawnError::NoProgram => write!(f, "empty argument vector"),
            SpawnError::Os { op, source } => write!(f, "{op}: {source}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One child to start. Build it, then call [`Spawn::spawn`]; the borrowed fds only have to stay
/// open until then.
#[derive(Debug, Clone)]
pub struct Spawn<'fd> {
    /// Path given to `posix_spawn` (no `PATH` search, like `execv`).
    program: OsString,
    /// Full argv, `argv[0]` included.
    argv: Vec<OsString>,
    /// `None`: the current process environment at spawn time.
    env: Option<Vec<(OsString, OsString)>>,
    fd_map: Vec<(BorrowedFd<'fd>, RawFd)>,
    close: Vec<RawFd>,
    new_process_group: bool,
}

impl<'fd> Spawn<'fd> {
    /// Runs `program` with `argv[0] = program`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref().to_os_string();
        Spawn {
            argv: vec![program.clone()],
            program,
            env: None,
            fd_map: Vec::new(),
            close: Vec::new(),
            new_process_group: false,
        }
    }

    /// Runs `argv[0]` with exactly this argv, as `execv(argv[0], argv)` would.
    pub fn from_argv<S: AsRef<OsStr>>(argv: &[S]) -> Result<Self, SpawnError> {
        let (first, rest) = argv.split_first().ok_or(SpawnError::NoProgram)?;
        let mut spawn = Spawn::new(first);
        spawn.args(rest);
        Ok(spawn)
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.argv.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<S: AsRef<OsStr>>(&mut self, args: &[S]) -> &mut Self {
        self.argv
            .extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Starts from an empty environment instead of the current one.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env = Some(Vec::new());
        self
    }

    /// Sets one variable, replacing an inherited or earlier value of the same name.
    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        let env = self
            .env
            .get_or_insert_with(|| std::env::vars_os().collect());
        let name = name.as_ref();
        env.retain(|(existing, _)| existing != name);
        env.push((name.to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// The child gets `source` as fd `target` (`dup2` in the child). `source` may be any open fd,
    /// including one numbered like another mapping's target.
    pub fn map_fd(&mut self, source: BorrowedFd<'fd>, target: RawFd) -> &mut Self {
        self.fd_map.push((source, target));
        self
    }

    /// Closes `fd` in the child; meant for 0, 1 and 2, which are otherwise inherited.
    pub fn close_fd(&mut self, fd: RawFd) -> &mut Self {
        self.close.push(fd);
        self
    }

    /// Puts the child in a new process group of its own (pgid = its pid), so that a signal to
    /// the group reaches the helper and everything it starts, but not the daemon.
    pub fn new_process_group(&mut self, on: bool) -> &mut Self {
        self.new_process_group = on;
        self
    }

    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Starts the child and returns a handle that can signal it safely (see [`Child`]).
    pub fn spawn_child(&self) -> Result<Child, SpawnError> {
        self.spawn().map(Child::new)
    }

    /// Starts the child and returns its pid. The caller owns the child from here on: it must
    /// reap it (ctdbd does that from its SIGCHLD handling).
    pub fn spawn(&self) -> Result<i32, SpawnError> {
        let mut targets: Vec<RawFd> = Vec::with_capacity(self.fd_map.len());
        for &(_, target) in &self.fd_map {
            if target < 0 || targets.contains(&target) {
                return Err(SpawnError::BadFdMap(target));
            }
            targets.push(target);
        }
        let highest_target = targets.iter().copied().max().unwrap_or(2).max(2);

        let program = c_string(&self.program)?;
        let argv_c = self
            .argv
            .iter()
            .map(|a| c_string(a))
            .collect::<Result<Vec<_>, _>>()?;
        let env_c = match &self.env {
            Some(env) => env_entries(env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))?,
            None => {
                let current: Vec<(OsString, OsString)> = std::env::vars_os().collect();
                env_entries(current.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))?
            }
        };
        let argv_ptrs = null_terminated(&argv_c);
        let env_ptrs = null_terminated(&env_c);

        // Each source is first copied above every target: the child's dup2 calls can then never
        // overwrite a source that a later dup2 still needs, and source != target always, so dup2
        // really clears close-on-exec on the target.
        let mut staged: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(self.fd_map.len());
        for &(source, target) in &self.fd_map {
            staged.push((dup_above(source, highest_target + 1)?, target));
        }

        let mut actions = FileActions::new()?;
        for (staged_fd, target) in &staged {
            actions.dup2(staged_fd.as_raw_fd(), *target)?;
        }
        for fd in 3..highest_target {
            if !targets.contains(&fd) {
                actions.close(fd)?;
            }
        }
        for &fd in &self.close {
            if !targets.contains(&fd) {
                actions.close(fd)?;
            }
        }
        actions.close_from(highest_target + 1)?;

        let attr = SpawnAttr::new(self.new_process_group)?;

        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid for the call: `program`, the argv and envp arrays (whose
        // strings are owned by `argv_c`/`env_c` and outlive the call) are NUL-terminated and
        // NULL-terminated, and `actions`/`attr` were initialised by their constructors.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                actions.as_ptr(),
                attr.as_ptr(),
                argv_ptrs.as_ptr().cast(),
                env_ptrs.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(SpawnError::os("posix_spawn", rc));
        }
        Ok(pid)
    }
}

fn c_string(text: &OsStr) -> Result<CString, SpawnError> {
    CString::new(text.as_bytes()).map_err(|_| SpawnError::NulByte(text.to_os_string()))
}

fn env_entries<'a>(
    vars: impl Iterator<Item = (&'a OsStr, &'a OsStr)>,
) -> Result<Vec<CString>, SpawnError> {
    vars.map(|(name, value)| {
        let mut entry = name.to_os_string();
        entry.push("=");
        entry.push(value);
        c_string(&entry)
    })
    .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a close-on-exec copy of `fd` numbered at least `min`.
fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> Result<OwnedFd, SpawnError> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the borrowed (open) fd and returns a new one.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(SpawnError::last_os("F_DUPFD_CLOEXEC"));
    }
    // SAFETY: `new` is a freshly created fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// An initialised `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(Box<MaybeUninit<libc::posix_spawn_file_actions_t>>);

impl FileActions {
    fn new() -> Result<Self, SpawnError> {
        let mut raw = Box::new(MaybeUninit::uninit());
        // SAFETY: init writes a valid empty action list into the boxed storage.
        let rc = unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) };
        if rc != 0 {
            return Err(SpawnError::os("posix_spawn_file_actions_init", rc));
        }
        Ok(FileActions(raw))
    }

    fn as_ptr(&self) -> *const libc::posix_spawn_file_actions_t {
        self.0.as_ptr()
    }

    fn as_mut_ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
        self.0.as_mut_ptr()
    }

    fn dup2(&mut self, source: RawFd, target: RawFd) -> Result<(), SpawnError> {
        // SAFETY: the action list was initialised in `new`.
        let rc =
            unsafe { libc::posix_spawn_file_actions_adddup2(self.as_mut_ptr(), source, target) };
        if rc != 0 {
            return Err(SpawnError::os("posix_spawn_file_actions_adddup2", rc));
        }
        Ok(())
    }

    fn close(&mut self, fd: RawFd) -> Result<(), SpawnError> {
        // SAFETY: the action list was initialised in `new`.
        let rc = unsafe { libc::posix_spawn_file_actions_addclose(self.as_mut_ptr(), fd) };
        if rc != 0 {
            return Err(SpawnError::os("posix_spawn_file_actions_addclose", rc));
        }
        Ok(())
    }

    fn close_from(&mut self, from: RawFd) -> Result<(), SpawnError> {
        // SAFETY: the action list was initialised in `new`.
        let rc = unsafe { libc::posix_spawn_file_actions_addclosefrom_np(self.as_mut_ptr(), from) };
        if rc != 0 {
            return Err(SpawnError::os(
                "posix_spawn_file_actions_addclosefrom_np",
                rc,
            ));
        }
        Ok(())
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: the action list was initialised in `new` and is destroyed exactly once.
        unsafe { libc::posix_spawn_file_actions_destroy(self.as_mut_ptr()) };
    }
}

/// An initialised `posix_spawnattr_t` that resets the signal mask and every signal action, and
/// optionally starts a new process group; destroyed on drop.
struct SpawnAttr(Box<MaybeUninit<libc::posix_spawnattr_t>>);

impl SpawnAttr {
    fn new(new_process_group: bool) -> Result<Self, SpawnError> {
        let mut raw = Box::new(MaybeUninit::uninit());
        // SAFETY: init writes valid default attributes into the boxed storage.
        let rc = unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) };
        if rc != 0 {
            return Err(SpawnError::os("posix_spawnattr_init", rc));
        }
        let mut attr = SpawnAttr(raw);

        let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
        let mut full = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset/sigfillset initialise the sets they are given.
        let (empty, full) = unsafe {
            libc::sigemptyset(empty.as_mut_ptr());
            libc::sigfillset(full.as_mut_ptr());
            (empty.assume_init(), full.assume_init())
        };

        let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        if new_process_group {
            flags |= libc::POSIX_SPAWN_SETPGROUP;
        }
        let flags = libc::c_short::try_from(flags)
            .map_err(|_| SpawnError::os("posix_spawnattr_setflags", libc::EINVAL))?;
        let attr_ptr = attr.0.as_mut_ptr();
        // SAFETY: the attributes were initialised above; the sets are valid and only read.
        let rcs = unsafe {
            [
                (
                    "posix_spawnattr_setsigmask",
                    libc::posix_spawnattr_setsigmask(attr_ptr, &empty),
                ),
                (
                    "posix_spawnattr_setsigdefault",
                    libc::posix_spawnattr_setsigdefault(attr_ptr, &full),
                ),
                // pgroup 0 means "a new group whose id is the child's pid".
                (
                    "posix_spawnattr_setpgroup",
                    libc::posix_spawnattr_setpgroup(attr_ptr, 0),
                ),
                (
                    "posix_spawnattr_setflags",
                    libc::posix_spawnattr_setflags(attr_ptr, flags),
                ),
            ]
        };
        for (op, rc) in rcs {
            if rc != 0 {
                return Err(SpawnError::os(op, rc));
            }
        }
        Ok(attr)
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        self.0.as_ptr()
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: the attributes were initialised in `new` and are destroyed exactly once.
        unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
    }
}

/// A pipe whose ends are both close-on-exec: `(read end, write end)`. Hand the write end to a
/// child with [`Spawn::map_fd`]; the parent's copy never leaks into other children.
pub fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: pipe2 writes two new fds into the array on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(SpawnError::last_os("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of close-on-exec unix stream sockets.
pub fn socketpair_cloexec() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: socketpair writes two new fds into the array on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(SpawnError::last_os("socketpair"));
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A started child that can be signalled without ever hitting an unrelated process that
/// reused its pid: signals go through a pidfd, which keeps naming this process even after
/// someone has reaped it. Reaping stays with the caller (`waitpid`); this handle never waits.
/// Without pidfd support (Linux < 5.3) it falls back to plain `kill`, and the caller must then
/// stop signalling once it has reaped the pid.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: Option<OwnedFd>,
}

impl Child {
    /// Wraps a child that has not been reaped yet (its pid cannot have been reused).
    pub fn new(pid: i32) -> Self {
        Child {
            pid,
            pidfd: pidfd_open(pid),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal`; a child that has exited (or been reaped) is not an error.
    pub fn signal(&self, signal: i32) -> Result<(), SpawnError> {
        let Some(pidfd) = &self.pidfd else {
            return signal_pid(self.pid, signal);
        };
        // SAFETY: pidfd_send_signal reads only its scalar arguments; the pidfd is open and
        // owned by us, and a NULL siginfo asks for the default (SI_USER) information.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(SpawnError::Os {
                    op: "pidfd_send_signal",
                    source: err,
                });
            }
        }
        Ok(())
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes scalars and returns a new fd (close-on-exec by definition).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the fd was just created and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal_pid(pid: i32, signal: i32) -> Result<(), SpawnError> {
    if pid <= 0 {
        // kill() with 0 or a negative pid addresses process groups: never what is meant here.
        return Err(SpawnError::os("kill", libc::EINVAL));
    }
    // SAFETY: kill has no memory effects; pid > 0 addresses a single process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(SpawnError::Os {
                op: "kill",
                source: err,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn wait_exit_code(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid writes the status of our own child into `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid, "waitpid");
        assert!(
            libc::WIFEXITED(status),
            "child {pid} did not exit normally: {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }

    /// Runs `spawn` with its stdout on a pipe and returns the exit code and the output.
    fn run_capturing(spawn: &mut Spawn<'_>) -> (i32, String) {
        let (read_end, write_end) = pipe_cloexec().unwrap();
        let pid = {
            let mut with_stdout = spawn.clone();
            with_stdout.map_fd(write_end.as_fd(), 1);
            with_stdout.spawn().unwrap()
        };
        drop(write_end);
        let mut out = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut out)
            .unwrap();
        (wait_exit_code(pid), out)
    }

    fn devnull() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    /// A shell that lists its own fds. `ls` runs as its child (the trailing `true` stops the
    /// shell from exec'ing it), so the listing is the shell's fd table, not ls's; no pipeline,
    /// because the shell's pipe fds would show up.
    const LIST_OWN_FDS: &str = "ls -1 /proc/$$/fd; true";

    fn sorted_fds(listing: &str) -> Vec<i32> {
        let mut fds: Vec<i32> = listing
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        fds.sort_unstable();
        fds
    }

    #[test]
    fn child_inherits_only_mapped_fds() {
        // Decoys: close-on-exec fds, and two fds deliberately *without* close-on-exec (the
        // close actions must catch those). None may appear in the child.
        let _decoy_pipe = pipe_cloexec().unwrap();
        let _decoy_sockets = socketpair_cloexec().unwrap();
        let leaky_low = devnull();
        let leaky = devnull();
        for fd in [&leaky_low, &leaky] {
            // SAFETY: clears FD_CLOEXEC on an fd we own.
            assert_eq!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }, 0);
        }
        let null = devnull();
        let extra = devnull();

        let mut spawn = Spawn::new("/bin/sh");
        spawn
            .args(&["-c", LIST_OWN_FDS])
            .map_fd(null.as_fd(), 0)
            .map_fd(null.as_fd(), 2)
            .map_fd(extra.as_fd(), 9);
        let (code, out) = run_capturing(&mut spawn);
        assert_eq!(code, 0);
        assert_eq!(
            sorted_fds(&out),
            [0, 1, 2, 9],
            "leaky fds were {leaky_low:?} {leaky:?}"
        );
    }

    #[test]
    fn swapped_and_identity_mappings() {
        // Sources numbered like the targets of other mappings must still arrive intact: map a
        // pipe's write end to fd 1 and to its own number.
        let (read_end, write_end) = pipe_cloexec().unwrap();
        let own = write_end.as_raw_fd();
        let script = format!("echo one >&{own}; echo two");
        let mut spawn = Spawn::new("/bin/sh");
        spawn
            .args(&["-c", script.as_str()])
            .map_fd(write_end.as_fd(), own)
            .map_fd(write_end.as_fd(), 1);
        let pid = spawn.spawn().unwrap();
        drop(write_end);
        let mut out = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(wait_exit_code(pid), 0);
        assert_eq!(out, "one\ntwo\n");
    }

    #[test]
    fn closed_std_fds_are_closed() {
        let mut spawn = Spawn::new("/bin/sh");
        spawn.args(&["-c", LIST_OWN_FDS]).close_fd(0).close_fd(2);
        let (code, out) = run_capturing(&mut spawn);
        assert_eq!(code, 0);
        assert_eq!(sorted_fds(&out), [1]);
    }

    #[test]
    fn signal_mask_and_dispositions_are_reset() {
        // The test harness ignores SIGPIPE (Rust runtime) and this thread blocks SIGUSR1 and
        // SIGTERM, like ctdbd with its signalfd; the child must see neither.
        let mut block = MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: builds a set and changes only this test thread's mask; restored below.
        unsafe {
            libc::sigemptyset(block.as_mut_ptr());
            libc::sigaddset(block.as_mut_ptr(), libc::SIGUSR1);
            libc::sigaddset(block.as_mut_ptr(), libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, block.as_ptr(), old.as_mut_ptr());
        }
        let mut spawn = Spawn::new("/bin/grep");
        spawn.args(&["-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
        let (code, out) = run_capturing(&mut spawn);
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
        assert_eq!(code, 0);
        let masks: Vec<u64> = out
            .lines()
            .map(|line| u64::from_str_radix(line.split('\t').nth(1).unwrap(), 16).unwrap())
            .collect();
        // glibc's posix_spawn deliberately leaves its two internal real-time signals (32 and
        // 33, used for thread cancellation and set*id broadcasts) ignored; they are not ours.
        let glibc_internal = (1u64 << 31) | (1u64 << 32);
        assert_eq!(masks.len(), 2, "{out}");
        assert_eq!(masks[0], 0, "blocked signals leaked: {out}");
        assert_eq!(masks[1] & !glibc_internal, 0, "{out}");
    }

    #[test]
    fn environment_and_argv() {
        let mut spawn =
            Spawn::from_argv(&["/bin/sh", "-c", "echo \"$0|$1|$CTDB_X|$HOME\"", "a b"]).unwrap();
        spawn.env_clear().env("CTDB_X", "1").env("CTDB_X", "2");
        let (code, out) = run_capturing(&mut spawn);
        assert_eq!(code, 0);
        assert_eq!(out, "a b||2|\n");

        let mut inherit = Spawn::new("/bin/sh");
        inherit
            .args(&["-c", "echo \"$CTDB_SPAWN_TEST\""])
            .env("CTDB_SPAWN_TEST", "yes");
        assert_eq!(run_capturing(&mut inherit).1, "yes\n");
    }

    #[test]
    fn new_process_group() {
        let mut spawn = Spawn::new("/bin/sh");
        spawn
            .args(&["-c", "cut -d' ' -f5 /proc/$$/stat; echo $$"])
            .new_process_group(true);
        let (code, out) = run_capturing(&mut spawn);
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out:?}");
        assert_eq!(lines[0], lines[1], "pgid must equal the child's pid");
    }

    #[test]
    fn child_handle_signals_and_survives_reaping() {
        let child = Spawn::from_argv(&["/bin/sleep", "10"])
            .unwrap()
            .spawn_child()
            .unwrap();
        assert!(child.pidfd.is_some(), "this kernel should have pidfds");
        child.signal(libc::SIGTERM).unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child, writing only into `status`.
        let waited = unsafe { libc::waitpid(child.pid(), &mut status, 0) };
        assert_eq!(waited, child.pid());
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM);
        // Reaped: the pid may now belong to anyone, but the pidfd still names the dead child.
        child.signal(libc::SIGKILL).unwrap();
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Spawn::new("/nonexistent/ctdb-rs-helper").spawn(),
            Err(SpawnError::Os {
                op: "posix_spawn",
                ..
            })
        ));
        assert!(matches!(
            Spawn::from_argv::<&str>(&[]),
            Err(SpawnError::NoProgram)
        ));
        let mut nul = Spawn::new("/bin/true");
        nul.arg("a\0b");
        assert!(matches!(nul.spawn(), Err(SpawnError::NulByte(_))));
        let null = devnull();
        let mut dup = Spawn::new("/bin/true");
        dup.map_fd(null.as_fd(), 5).map_fd(null.as_fd(), 5);
        assert!(matches!(dup.spawn(), Err(SpawnError::BadFdMap(5))));
        assert!(signal_pid(0, libc::SIGTERM).is_err());
    }
}
