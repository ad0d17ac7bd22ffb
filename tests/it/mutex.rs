//! The cluster mutex: our `ctdb_mutex_fcntl_helper` against stock's on the same lock file, its
//! reactions to lost files, dead parents, signals and a hung filesystem, and the daemon-side
//! [`ClusterMutex`] handle driving real and scripted helpers.
//!
//! Every test works in its own temporary directory and kills and reaps every process it
//! started, by pid.

use ctdb::common::clock::MonotonicClock;
use ctdb::common::spawn::{pipe_cloexec, Spawn};
use ctdb::protocol::helper::ClusterMutexResult::{self, Contended, Error, Taken, Timeout};
use ctdb::server::cluster_mutex::{ClusterMutex, ClusterMutexEvent};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const OURS: &str = env!("CARGO_BIN_EXE_ctdb_mutex_fcntl_helper");
const STOCK: &str = "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper";

fn stock_installed() -> bool {
    let found = Path::new(STOCK).exists();
    if !found {
        eprintln!("skipping: {STOCK} is not installed");
    }
    found
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ctdb-rs-mutex-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn lock(&self) -> String {
        self.path("cluster.lock").to_str().unwrap().to_owned()
    }

    /// An executable shell script (run through `/bin/sh`, so it is never exec'd while this
    /// process might still hold it open for writing).
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Where helpers' stderr goes, so that their messages can be checked and do not litter
    /// the test output.
    fn log(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("helpers.log"))
            .unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.path("helpers.log")).unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Our children, killed and reaped on drop so that a failing test leaves nothing behind.
#[derive(Default)]
struct Children(Vec<i32>);

impl Children {
    fn add(&mut self, pid: i32) -> i32 {
        self.0.push(pid);
        pid
    }

    /// Waits up to `limit` for `pid` to exit and returns its wait status.
    fn reap(&mut self, pid: i32, limit: Duration) -> Option<i32> {
        let clock = MonotonicClock::new();
        let give_up = clock.now().saturating_add(limit);
        loop {
            let mut status = 0;
            // SAFETY: waits for one of our own children, writing only into `status`.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid {
                self.0.retain(|&p| p != pid);
                return Some(status);
            }
            assert_eq!(rc, 0, "waitpid({pid}) failed");
            if clock.now() >= give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: `pid` is our unreaped child, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let mut status = 0;
            // SAFETY: as above; writes only into `status`.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

fn exited_with(status: Option<i32>, code: i32) -> bool {
    status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == code)
}

fn killed_by(status: Option<i32>, signal: i32) -> bool {
    status.is_some_and(|s| libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == signal)
}

/// The pid holding a conflicting fcntl lock on byte `start` of `path`, if any (F_GETLK; this
/// process holds no locks on the file, so opening and closing it here is harmless).
fn lock_holder(path: &str, start: i64) -> Option<i32> {
    let file = File::open(path).ok()?;
    let mut lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: F_GETLK reads and writes the flock struct we own.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    assert_eq!(rc, 0, "F_GETLK");
    (lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid)
}

/// An open-file-description lock on byte `start`, held until the returned file is dropped.
/// It conflicts with the helpers' classic fcntl locks but, unlike one, is not released when
/// this process closes some other descriptor of the file.
fn ofd_lock(path: &str, start: i64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK only reads the flock struct.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    assert_eq!(rc, 0, "F_OFD_SETLK on byte {start}");
    file
}

/// Drives `mutex` like the daemon's loop would until it reports an event or `limit` passes.
fn next_event(
    mutex: &mut ClusterMutex,
    clock: &MonotonicClock,
    limit: Duration,
) -> Option<ClusterMutexEvent> {
    let give_up = clock.now().saturating_add(limit);
    loop {
        let now = clock.now();
        if let Some(event) = mutex.check_timeout(now) {
            return Some(event);
        }
        if now >= give_up {
            return None;
        }
        let mut wake = give_up;
        if let Some(deadline) = mutex.deadline() {
            wake = wake.min(deadline);
        }
        let wait = i32::try_from(wake.saturating_since(now).as_millis()).unwrap_or(i32::MAX);
        if let Some(fd) = mutex.read_fd() {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one pollfd that we own.
            unsafe { libc::poll(&mut pfd, 1, wait.max(1)) };
            let events = mutex.on_readable(clock.now());
            assert!(events.len() <= 1, "one event at a time here: {events:?}");
            if let Some(&event) = events.first() {
                return Some(event);
            }
        } else {
            std::thread::sleep(Duration::from_millis(u64::try_from(wait.max(1)).unwrap()));
        }
    }
}

fn expect_result(
    mutex: &mut ClusterMutex,
    clock: &MonotonicClock,
    expected: ClusterMutexResult,
) -> Duration {
    match next_event(mutex, clock, Duration::from_secs(10)) {
        Some(ClusterMutexEvent::Result { result, latency }) => {
            assert_eq!(result, expected, "helper {} answered", mutex.pid());
            latency
        }
        other => panic!(
            "expected {expected:?} from helper {}, got {other:?}",
            mutex.pid()
        ),
    }
}

/// Starts a lock helper program (ours or stock) on `lock` with the daemon-side handle.
fn start_helper(
    children: &mut Children,
    dir: &TempDir,
    argv: &[&str],
    timeout: Option<Duration>,
    clock: &MonotonicClock,
) -> ClusterMutex {
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    let log = dir.log();
    let mutex = ClusterMutex::start_argv(&argv, Some(log.as_fd()), timeout, clock.now()).unwrap();
    children.add(mutex.pid());
    mutex
}

/// Releases a helper and waits for it to exit; returns its wait status.
fn release_and_reap(
    children: &mut Children,
    mutex: ClusterMutex,
    clock: &MonotonicClock,
) -> Option<i32> {
    let pid = mutex.pid();
    let mut releasing = mutex.release(clock.now(), Duration::from_secs(5));
    let status = children.reap(pid, Duration::from_secs(3));
    assert!(!releasing.check_timeout(clock.now()), "no SIGKILL needed");
    status
}

#[test]
fn ours_and_stock_exclude_each_other() {
    if !stock_installed() {
        return;
    }
    let dir = TempDir::new("exclude");
    let lock = dir.lock();
    let clock = MonotonicClock::new();
    let mut children = Children::default();

    for (holder, other) in [(OURS, STOCK), (STOCK, OURS)] {
        let mut held = start_helper(&mut children, &dir, &[holder, &lock], None, &clock);
        expect_result(&mut held, &clock, Taken);
        assert_eq!(
            lock_holder(&lock, 0),
            Some(held.pid()),
            "{holder} holds byte 0"
        );

        let mut loser = start_helper(&mut children, &dir, &[other, &lock], None, &clock);
        expect_result(&mut loser, &clock, Contended);
        // A contended helper exits on its own, with status 0 like stock.
        assert!(exited_with(
            children.reap(loser.pid(), Duration::from_secs(3)),
            0
        ));
        drop(loser);

        let status = release_and_reap(&mut children, held, &clock);
        assert!(status.is_some(), "{holder} exits when released");
        assert_eq!(lock_holder(&lock, 0), None, "{holder} released the lock");
    }
    // The file is created with mode 0600, as stock creates it.
    let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn errors_and_usage() {
    let dir = TempDir::new("errors");
    let clock = MonotonicClock::new();
    let mut children = Children::default();
    let unreachable = dir.path("missing-dir/cluster.lock");
    let mut mutex = start_helper(
        &mut children,
        &dir,
        &[OURS, unreachable.to_str().unwrap()],
        None,
        &clock,
    );
    expect_result(&mut mutex, &clock, Error);
    assert!(exited_with(
        children.reap(mutex.pid(), Duration::from_secs(3)),
        0
    ));
    assert!(
        dir.log_text().contains("Unable to open"),
        "{}",
        dir.log_text()
    );

    // Bad arguments: usage on stderr, exit 1, nothing on stdout (the daemon sees '3').
    for bad in [
        &[OURS][..],
        &[OURS, "f", "-1"],
        &[OURS, "f", "5", "x"],
        &[OURS, "a", "1", "2", "3"],
    ] {
        let mut mutex = start_helper(&mut children, &dir, bad, None, &clock);
        expect_result(&mut mutex, &clock, Error);
        assert!(exited_with(
            children.reap(mutex.pid(), Duration::from_secs(3)),
            1
        ));
    }
    assert!(dir
        .log_text()
        .contains("Usage: ctdb_mutex_fcntl_helper <file>"));
}

#[test]
fn lock_lost_when_file_removed_or_replaced() {
    let dir = TempDir::new("lost");
    let lock = dir.lock();
    let clock = MonotonicClock::new();
    let mut children = Children::default();

    for how in ["removed", "replaced"] {
        let mut mutex = start_helper(&mut children, &dir, &[OURS, &lock, "1"], None, &clock);
        expect_result(&mut mutex, &clock, Taken);
        // Held across a few checks while nothing changes.
        assert_eq!(
            next_event(&mut mutex, &clock, Duration::from_millis(2300)),
            None
        );
        assert_eq!(lock_holder(&lock, 0), Some(mutex.pid()));

        let changed_at = clock.now();
        match how {
            "removed" => std::fs::remove_file(&lock).unwrap(),
            _ => {
                let fresh = dir.path("fresh.lock");
                std::fs::write(&fresh, b"").unwrap();
                std::fs::rename(&fresh, &lock).unwrap();
            }
        }
        assert_eq!(
            next_event(&mut mutex, &clock, Duration::from_secs(5)),
            Some(ClusterMutexEvent::Lost),
            "file {how}"
        );
        let noticed = clock.now().saturating_since(changed_at);
        assert!(
            noticed < Duration::from_millis(1500),
            "{how}: noticed after {noticed:?}"
        );
        assert!(exited_with(
            children.reap(mutex.pid(), Duration::from_secs(3)),
            0
        ));
        drop(mutex);
        if how == "replaced" {
            assert_eq!(lock_holder(&lock, 0), None, "nobody holds the new file");
        }
    }
    let log = dir.log_text();
    assert!(log.contains("open failed (ret=2)"), "{log}");
    assert!(log.contains("inode changed"), "{log}");
}

#[test]
fn helper_exits_at_once_when_result_pipe_closes() {
    let dir = TempDir::new("pipe");
    let lock = dir.lock();
    let mut children = Children::default();
    let clock = MonotonicClock::new();

    let (read_end, write_end) = pipe_cloexec().unwrap();
    let log = dir.log();
    let pid = children.add(
        Spawn::from_argv(&[OURS, &lock])
            .unwrap()
            .map_fd(write_end.as_fd(), 1)
            .map_fd(log.as_fd(), 2)
            .spawn()
            .unwrap(),
    );
    drop(write_end);
    let mut pipe = File::from(read_end);
    let mut answer = [0u8; 1];
    pipe.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"0");
    assert_eq!(lock_holder(&lock, 0), Some(pid));

    // The parent stays alive; only the read end goes, as when ctdbd drops the handle.
    let closed_at = clock.now();
    drop(pipe);
    let status = children.reap(pid, Duration::from_secs(3));
    let took = clock.now().saturating_since(closed_at);
    assert!(exited_with(status, 0), "status {status:?}");
    assert!(took < Duration::from_millis(100), "took {took:?}");
    assert_eq!(lock_holder(&lock, 0), None);
}

/// `pidfd_open`, to wait for the exit of a process that is not our child.
fn pidfd(pid: i32) -> OwnedFd {
    // SAFETY: scalar arguments; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(fd >= 0, "pidfd_open({pid})");
    // SAFETY: a fresh fd owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap()) }
}

fn wait_pidfd(fd: &OwnedFd, limit: Duration) -> bool {
    let clock = MonotonicClock::new();
    let give_up = clock.now().saturating_add(limit);
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = give_up.saturating_since(clock.now());
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: polls one pollfd that we own.
        let ready = unsafe { libc::poll(&mut pfd, 1, millis) };
        if ready == 1 {
            return true;
        }
        // Other tests' children make signals arrive in this process: EINTR is not an answer.
        let interrupted =
            ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        if !interrupted || left.is_zero() {
            return false;
        }
    }
}

/// What the kernel says about a process, for failure messages.
fn proc_status(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            s.lines()
                .filter(|l| {
                    ["State", "PPid", "SigPnd", "ShdPnd", "SigBlk"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|_| "gone".to_owned())
}

#[test]
fn helper_exits_at_once_when_parent_dies() {
    // The helper's stdout is a pipe whose read end *this* process keeps open, so the pipe
    // cannot tell it anything: only the parent-death signal and the parent check can.
    let dir = TempDir::new("orphan");
    let lock = dir.lock();
    let mut children = Children::default();
    let clock = MonotonicClock::new();

    let (out_read, out_write) = pipe_cloexec().unwrap();
    let (pid_read, pid_write) = pipe_cloexec().unwrap();
    let log = dir.log();
    // The intermediate shell starts the helper, reports its pid on fd 3, then becomes a
    // long sleep (same process) so that the helper's parent stays put until we kill it.
    // Neither keeps fd 3, or reading the pid would wait for them.
    let script = "\"$0\" \"$1\" 3>&- & echo $! >&3; exec sleep 1000 3>&-";
    let intermediate = children.add(
        Spawn::from_argv(&["/bin/sh", "-c", script, OURS, &lock])
            .unwrap()
            .map_fd(out_write.as_fd(), 1)
            .map_fd(log.as_fd(), 2)
            .map_fd(pid_write.as_fd(), 3)
            .spawn()
            .unwrap(),
    );
    drop(out_write);
    drop(pid_write);
    let mut helper_pid = String::new();
    File::from(pid_read)
        .read_to_string(&mut helper_pid)
        .unwrap();
    let helper: i32 = helper_pid.trim().parse().unwrap();
    let mut answer = [0u8; 1];
    let mut out = File::from(out_read);
    out.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"0");
    assert_eq!(lock_holder(&lock, 0), Some(helper));

    let helper_fd = pidfd(helper);
    let killed_at = clock.now();
    // SAFETY: `intermediate` is our unreaped child.
    unsafe { libc::kill(intermediate, libc::SIGKILL) };
    // The kernel's own word backs the pidfd: a process that is gone or a zombie has exited.
    let exited = wait_pidfd(&helper_fd, Duration::from_secs(10)) || {
        let status = proc_status(helper);
        status == "gone" || status.contains("zombie")
    };
    let took = clock.now().saturating_since(killed_at);
    assert!(
        exited,
        "helper {helper} outlived its parent: {}; log: {}",
        proc_status(helper),
        std::fs::read_to_string(dir.path("helpers.log")).unwrap_or_default()
    );
    assert!(
        took < Duration::from_millis(100),
        "took {took:?} (stock: up to 5 s)"
    );
    assert!(killed_by(
        children.reap(intermediate, Duration::from_secs(3)),
        libc::SIGKILL
    ));
    assert_eq!(lock_holder(&lock, 0), None);
    // The helper was not our child; init reaps it. Our copy of its pipe sees EOF.
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn sigterm_releases_the_lock() {
    let dir = TempDir::new("term");
    let lock = dir.lock();
    let clock = MonotonicClock::new();
    let mut children = Children::default();

    let (read_end, write_end) = pipe_cloexec().unwrap();
    let log = dir.log();
    let pid = children.add(
        Spawn::from_argv(&[OURS, &lock, "1"])
            .unwrap()
            .map_fd(write_end.as_fd(), 1)
            .map_fd(log.as_fd(), 2)
            .spawn()
            .unwrap(),
    );
    drop(write_end);
    let mut pipe = File::from(read_end);
    let mut answer = [0u8; 1];
    pipe.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"0");
    assert_eq!(lock_holder(&lock, 0), Some(pid));

    // SIGTERM alone, with the pipe still open: released, clean exit, checker gone too.
    let sent_at = clock.now();
    // SAFETY: `pid` is our unreaped child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = children.reap(pid, Duration::from_secs(3));
    assert!(exited_with(status, 0), "status {status:?}");
    assert!(clock.now().saturating_since(sent_at) < Duration::from_millis(500));
    assert_eq!(lock_holder(&lock, 0), None);
    let mut rest = Vec::new();
    pipe.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "EOF: no process keeps the result pipe open"
    );
    // The lock is free for the next holder right away.
    let mut next = start_helper(&mut children, &dir, &[OURS, &lock], None, &clock);
    expect_result(&mut next, &clock, Taken);
    release_and_reap(&mut children, next, &clock);
}

#[test]
fn ping_timeout_releases_when_the_check_hangs() {
    // Holding byte 1 makes the checker's blocking test lock hang, like a cluster filesystem in
    // trouble. With a ping timeout the helper gives up the lock; without one it keeps it.
    // Stock runs alongside on its own file to show the same timing.
    let dir = TempDir::new("ping");
    let clock = MonotonicClock::new();
    let mut children = Children::default();
    let mut helpers = vec![(OURS, "2"), (OURS, "0")];
    if stock_installed() {
        helpers.push((STOCK, "2"));
    }
    let mut running = Vec::new();
    let mut byte1_locks = Vec::new();
    for (index, &(program, ping_timeout)) in helpers.iter().enumerate() {
        let lock = dir
            .path(&format!("lock{index}"))
            .to_str()
            .unwrap()
            .to_owned();
        let mut mutex = start_helper(
            &mut children,
            &dir,
            &[program, &lock, "1", ping_timeout],
            None,
            &clock,
        );
        expect_result(&mut mutex, &clock, Taken);
        byte1_locks.push(ofd_lock(&lock, 1));
        running.push((program, ping_timeout, lock, mutex));
    }
    let started = clock.now();
    for (program, ping_timeout, lock, mutex) in &mut running {
        if *ping_timeout == "0" {
            continue;
        }
        // First check at 1 s hangs; the last ping came at about 1 s; 2 s later: timeout.
        let event = next_event(mutex, &clock, Duration::from_secs(8));
        let after = clock.now().saturating_since(started);
        assert_eq!(event, Some(ClusterMutexEvent::Lost), "{program}");
        assert!(
            (Duration::from_millis(1800)..Duration::from_millis(4500)).contains(&after),
            "{program}: lost after {after:?}"
        );
        assert!(children.reap(mutex.pid(), Duration::from_secs(3)).is_some());
        assert_eq!(lock_holder(lock, 0), None, "{program} released");
    }
    let (_, _, lock, patient) = &mut running[1];
    assert!(patient.is_holding());
    assert_eq!(lock_holder(lock, 0), Some(patient.pid()));
    assert!(dir.log_text().contains("ping timeout from lock test child"));
    drop(byte1_locks);
    for (_, _, _, mutex) in running {
        if mutex.is_holding() {
            release_and_reap(&mut children, mutex, &clock);
        }
    }
}

#[test]
fn command_helpers_contention_error_and_argument_splitting() {
    let dir = TempDir::new("cmd");
    let clock = MonotonicClock::new();
    let mut children = Children::default();

    let contended = dir.script("contended.sh", "printf 1");
    let mut mutex = ClusterMutex::start(
        &format!("!/bin/sh {contended}"),
        "/bin/false",
        None,
        clock.now(),
    )
    .unwrap();
    children.add(mutex.pid());
    expect_result(&mut mutex, &clock, Contended);
    assert!(exited_with(
        children.reap(mutex.pid(), Duration::from_secs(3)),
        0
    ));
    assert_eq!(
        next_event(&mut mutex, &clock, Duration::from_millis(50)),
        None
    );
    drop(mutex);

    // Split on runs of blanks and tabs, no shell: the quotes arrive literally.
    let args = dir.script(
        "args.sh",
        "[ $# -eq 3 ] && [ \"$1\" = a ] && [ \"$2\" = \"'b\" ] && [ \"$3\" = \"c'\" ] && printf 0 \
         && exec sleep 1000; printf 3",
    );
    let mut mutex = ClusterMutex::start(
        &format!("!/bin/sh  {args} \ta   'b\tc' "),
        "/bin/false",
        None,
        clock.now(),
    )
    .unwrap();
    children.add(mutex.pid());
    expect_result(&mut mutex, &clock, Taken);
    release_and_reap(&mut children, mutex, &clock);

    // A helper that dies without a word is an error.
    let mut mutex = ClusterMutex::start("!/bin/true", "/bin/false", None, clock.now()).unwrap();
    children.add(mutex.pid());
    expect_result(&mut mutex, &clock, Error);
    children.reap(mutex.pid(), Duration::from_secs(3));

    // Without `!` the value is the single argument of the default helper.
    let lock = dir.lock();
    let mut mutex = ClusterMutex::start(&lock, OURS, None, clock.now()).unwrap();
    children.add(mutex.pid());
    expect_result(&mut mutex, &clock, Taken);
    assert_eq!(lock_holder(&lock, 0), Some(mutex.pid()));
    release_and_reap(&mut children, mutex, &clock);
}

#[test]
fn silent_helper_times_out_and_is_released() {
    let dir = TempDir::new("hang");
    let clock = MonotonicClock::new();
    let mut children = Children::default();
    let hang = dir.script("hang.sh", "exec sleep 1000");
    let mut mutex = ClusterMutex::start(
        &format!("!/bin/sh {hang}"),
        "/bin/false",
        Some(Duration::from_millis(300)),
        clock.now(),
    )
    .unwrap();
    children.add(mutex.pid());
    let latency = expect_result(&mut mutex, &clock, Timeout);
    assert!(latency >= Duration::from_millis(300), "{latency:?}");
    assert!(latency < Duration::from_millis(1000), "{latency:?}");
    assert_eq!(mutex.deadline(), None);
    let status = release_and_reap(&mut children, mutex, &clock);
    assert!(killed_by(status, libc::SIGTERM), "status {status:?}");
}

#[test]
fn helper_ignoring_sigterm_is_killed() {
    let dir = TempDir::new("stubborn");
    let clock = MonotonicClock::new();
    let mut children = Children::default();
    // SIGTERM stays ignored across the exec, so the process that holds the "lock" is deaf.
    let stubborn = dir.script("stubborn.sh", "trap '' TERM\nprintf 0\nexec sleep 1000");
    let mut mutex = ClusterMutex::start(
        &format!("!/bin/sh {stubborn}"),
        "/bin/false",
        None,
        clock.now(),
    )
    .unwrap();
    let pid = children.add(mutex.pid());
    expect_result(&mut mutex, &clock, Taken);

    let released_at = clock.now();
    let mut releasing = mutex.release(released_at, Duration::from_millis(300));
    assert_eq!(releasing.pid(), pid);
    assert_eq!(
        children.reap(pid, Duration::from_millis(200)),
        None,
        "SIGTERM is ignored"
    );
    assert!(!releasing.check_timeout(clock.now()));
    let deadline = releasing.deadline().unwrap();
    assert_eq!(
        deadline,
        released_at.saturating_add(Duration::from_millis(300))
    );
    while clock.now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(releasing.check_timeout(clock.now()), "SIGKILL sent");
    assert_eq!(releasing.deadline(), None);
    assert!(!releasing.check_timeout(clock.now()), "only once");
    assert!(killed_by(
        children.reap(pid, Duration::from_secs(3)),
        libc::SIGKILL
    ));
}

#[test]
fn dropped_handle_terminates_its_helper() {
    let dir = TempDir::new("drop");
    let lock = dir.lock();
    let clock = MonotonicClock::new();
    let mut children = Children::default();
    let mut mutex = start_helper(&mut children, &dir, &[OURS, &lock], None, &clock);
    expect_result(&mut mutex, &clock, Taken);
    let pid = mutex.pid();
    drop(mutex);
    assert!(children.reap(pid, Duration::from_secs(3)).is_some());
    assert_eq!(lock_holder(&lock, 0), None);
}
