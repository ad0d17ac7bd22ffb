//! ctdb-eventd, ours against stock: each scenario runs the same steps against our binary and
//! against `/usr/libexec/ctdb/ctdb-eventd`, driven by the stock `ctdb-event` tool (or raw
//! protocol packets), and the transcripts must match once timestamps and durations are masked.
//! Every test has its own `CTDB_BASE` and kills what it started by pid.

use ctdb::protocol::event::{
    EventPacket, EventReply, EventReplyPacket, EventRequest, EventRequestPacket, FrameBuffer,
    ScriptAction, ScriptRequest,
};
use ctdb::protocol::Marshal;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const STOCK_EVENTD: &str = "/usr/libexec/ctdb/ctdb-eventd";
const STOCK_TOOL: &str = "/usr/libexec/ctdb/ctdb-event";
const OUR_EVENTD: &str = env!("CARGO_BIN_EXE_ctdb-eventd");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Ours,
    Stock,
}

impl Impl {
    fn binary(self) -> &'static str {
        match self {
            Impl::Ours => OUR_EVENTD,
            Impl::Stock => STOCK_EVENTD,
        }
    }
}

fn stock_available() -> bool {
    let ok = Path::new(STOCK_EVENTD).exists() && Path::new(STOCK_TOOL).exists();
    if !ok {
        eprintln!("stock ctdb-eventd/ctdb-event not installed: comparison skipped");
    }
    ok
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if cond() {
            return true;
        }
        sleep_ms(50);
    }
    cond()
}

/// Whether a pid names a live process (a zombie, e.g. one re-parented to a pid 1 that does not
/// reap, counts as dead).
fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

fn kill_pid(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// A scratch `CTDB_BASE` in test mode: `run/`, `events/legacy/`, a `ctdb.conf` logging to a file
/// inside it. Removed on drop.
struct Base {
    dir: PathBuf,
}

impl Base {
    fn new(tag: &str, imp: Impl) -> Base {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let who = match imp {
            Impl::Ours => "o",
            Impl::Stock => "s",
        };
        let dir = std::env::temp_dir().join(format!(
            "ctdb-rs-evd-{tag}-{who}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("run")).unwrap();
        fs::create_dir_all(dir.join("events/legacy")).unwrap();
        let base = Base { dir };
        base.write_conf(None);
        base
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn write_conf(&self, debug_script: Option<&str>) {
        let mut conf = format!(
            "[logging]\n\tlocation = file:{}\n\tlog level = DEBUG\n",
            self.path("log.ctdb").display()
        );
        if let Some(script) = debug_script {
            conf.push_str(&format!("[event]\n\tdebug script = {script}\n"));
        }
        fs::write(self.path("ctdb.conf"), conf).unwrap();
    }

    fn file(&self, rel: &str, body: &str, mode: u32) {
        let path = self.path(rel);
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn script(&self, name: &str, body: &str, executable: bool) {
        self.file(
            &format!("events/legacy/{name}.script"),
            &format!("#!/bin/sh\n{body}"),
            if executable { 0o755 } else { 0o644 },
        );
    }

    /// A pid a script wrote into `rel`, once it is there.
    fn pid_in(&self, rel: &str) -> i32 {
        let path = self.path(rel);
        assert!(
            wait_until(10, || fs::read_to_string(&path)
                .is_ok_and(|s| s.trim().parse::<i32>().is_ok())),
            "no pid in {}",
            path.display()
        );
        fs::read_to_string(&path).unwrap().trim().parse().unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("log.ctdb")).unwrap_or_default()
    }

    fn event_tool(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(STOCK_TOOL);
        cmd.args(args)
            .env("CTDB_TEST_MODE", "yes")
            .env("CTDB_BASE", &self.dir)
            .env_remove("CTDB_EVENT_RUN_ALL")
            .env_remove("CTDB_SOCKET");
        cmd
    }

    /// Runs `ctdb-event` and returns "<stdout+stderr>rc=<status>".
    fn tool(&self, args: &[&str]) -> String {
        self.tool_env(args, &[])
    }

    fn tool_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = self.event_tool(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        format!("{text}rc={}\n", out.status.code().unwrap_or(-1))
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Replaces the duration and `ctime` in `ctdb-event status` lines (`%-20s %-10s ...`).
fn mask(text: &str) -> String {
    text.lines()
        .map(|line| {
            let status = line.get(21..31).map(str::trim_end);
            match status {
                Some("OK" | "ERROR" | "TIMEDOUT") if line.len() > 32 => {
                    format!("{}<time>", &line[..32])
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running eventd. Stopped with SIGTERM (and reaped) on drop.
struct Daemon {
    child: Option<Child>,
    /// Our end of the `-S` pipe: 4 zero bytes at start-up, EOF when eventd is gone.
    startup: OwnedFd,
}

impl Daemon {
    fn start(base: &Base, imp: Impl) -> Daemon {
        Self::start_watching(base, imp, std::process::id())
    }

    fn start_watching(base: &Base, imp: Impl, watch_pid: u32) -> Daemon {
        let (daemon, status) = Self::spawn(base, imp, watch_pid);
        assert_eq!(status, Some(0), "{imp:?} eventd did not report start-up");
        daemon
    }

    /// Starts eventd and waits up to 10 s for its start-up word (`None` if the pipe closed).
    fn spawn(base: &Base, imp: Impl, watch_pid: u32) -> (Daemon, Option<u32>) {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let startup_fd = write_end.as_raw_fd();
        let stderr = fs::File::create(base.path("eventd.stderr")).unwrap();
        let mut cmd = Command::new(imp.binary());
        cmd.arg("-P")
            .arg(watch_pid.to_string())
            .arg("-S")
            .arg(startup_fd.to_string())
            .env("CTDB_TEST_MODE", "yes")
            .env("CTDB_BASE", &base.dir)
            .env_remove("CTDB_INTERACTIVE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: only fcntl, which is async-signal-safe, runs between fork and exec; it lets
        // exactly this child inherit the write end (other tests' children do not).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(startup_fd, libc::F_SETFD, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        drop(write_end);
        let word = read_word(&read_end, 10_000);
        (
            Daemon {
                child: Some(child),
                startup: read_end,
            },
            word,
        )
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    /// Waits up to `secs` for eventd to exit by itself; returns its exit code.
    fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let mut status = None;
        wait_until(secs, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let status = status?;
        self.child = None;
        Some(
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        )
    }

    /// SIGTERM, then the exit code (SIGKILL after 10 s).
    fn stop(&mut self) -> Option<i32> {
        kill_pid(self.pid(), libc::SIGTERM);
        let code = self.wait_exit(10);
        if code.is_none() {
            self.kill();
        }
        code
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Reads one native-endian u32 within `timeout_ms`; `None` on EOF or timeout.
fn read_word(fd: &OwnedFd, timeout_ms: i32) -> Option<u32> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if ready != 1 {
        return None;
    }
    let mut buf = [0u8; 4];
    let mut file = fs::File::from(fd.try_clone().unwrap());
    file.read_exact(&mut buf).ok()?;
    Some(u32::from_ne_bytes(buf))
}

/// Sends raw request packets on one connection and returns the replies.
fn exchange(base: &Base, requests: &[EventRequestPacket]) -> Vec<EventReplyPacket> {
    let mut stream = UnixStream::connect(base.path("run/eventd.socket")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    for request in requests {
        stream.write_all(&request.to_bytes()).unwrap();
    }
    let mut frames = FrameBuffer::new();
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    while replies.len() < requests.len() {
        while let Some(frame) = frames.next_frame().unwrap() {
            replies.push(EventReplyPacket::from_bytes_exact(&frame).unwrap());
        }
        if replies.len() == requests.len() {
            break;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "eventd closed the connection");
        frames.extend(&buf[..n]);
    }
    replies
}

fn script_request(reqid: u32, component: &str, script: &str, enable: bool) -> EventRequestPacket {
    EventPacket {
        version: 0,
        reqid,
        body: EventRequest::Script(ScriptRequest {
            component: Some(component.into()),
            script: Some(script.into()),
            action: if enable {
                ScriptAction::Enable
            } else {
                ScriptAction::Disable
            },
        }),
    }
}

const OK_SCRIPT: &str = "echo \"ok: $*\"\nexit 0\n";

const FAIL_SCRIPT: &str = "\
case \"$1\" in
monitor) echo \"fail: monitor is unhappy\" >&2; exit 1 ;;
e65) echo \"exit 65\"; exit 65 ;;
killed) kill -9 $$ ;;
nul) printf 'before\\0after'; exit 3 ;;
esac
exit 0
";

/// Hangs in `startrecovery` and `hang`, leaving a background child whose pid it records.
const HANG_SCRIPT: &str = "\
case \"$1\" in
startrecovery|hang)
\tsleep 100 &
\techo $! > \"$CTDB_BASE/child.pid\"
\techo $$ > \"$CTDB_BASE/hung.pid\"
\techo \"child started\"
\twait
\t;;
esac
exit 0
";

fn standard_scripts(base: &Base) {
    base.script("01.ok", OK_SCRIPT, true);
    base.script("02.fail", FAIL_SCRIPT, true);
    base.script("03.off", "echo never\n", false);
    base.script("04.hang", HANG_SCRIPT, true);
    fs::create_dir_all(base.path("events/empty")).unwrap();
    // Scripts shipped in the data dir are enabled by a symlink from the etc dir.
    fs::create_dir_all(base.path("share/events/legacy")).unwrap();
    for name in ["05.shipped", "06.unlinked"] {
        base.file(
            &format!("share/events/legacy/{name}.script"),
            &format!("#!/bin/sh\necho {name} \"$@\"\n"),
            0o755,
        );
    }
    std::os::unix::fs::symlink(
        base.path("share/events/legacy/05.shipped.script"),
        base.path("events/legacy/05.shipped.script"),
    )
    .unwrap();
    // Scripts that cannot be executed in various ways.
    fs::create_dir_all(base.path("events/weird")).unwrap();
    base.file(
        "events/weird/01.noshebang.script",
        "echo no interpreter line\n",
        0o755,
    );
    base.file(
        "events/weird/02.badinterp.script",
        "#!/nonexistent/sh\necho hi\n",
        0o755,
    );
    std::os::unix::fs::symlink(
        base.path("events/weird/nowhere"),
        base.path("events/weird/03.dangling.script"),
    )
    .unwrap();
    fs::create_dir_all(base.path("events/weird/04.dir.script")).unwrap();
    base.file(
        "events/weird/05.ok.script",
        &format!("#!/bin/sh\n{OK_SCRIPT}"),
        0o755,
    );
}

/// The main transcript: run/status over success, failure, disabled scripts, run-all, errors,
/// timeouts, and the tool's script list/enable/disable.
fn basic_transcript(imp: Impl) -> String {
    let base = Base::new("basic", imp);
    standard_scripts(&base);
    let mut daemon = Daemon::start(&base, imp);
    let mut out = String::new();
    let mut step = |title: &str, text: String| {
        out.push_str(&format!("== {title}\n{}\n", mask(&text)));
    };
    step(
        "run monitor",
        base.tool(&["run", "30", "legacy", "monitor"]),
    );
    step(
        "status monitor",
        base.tool(&["status", "legacy", "monitor"]),
    );
    step(
        "run monitor (run all)",
        base.tool_env(
            &["run", "30", "legacy", "monitor"],
            &[("CTDB_EVENT_RUN_ALL", "1")],
        ),
    );
    step(
        "status monitor",
        base.tool(&["status", "legacy", "monitor"]),
    );
    step(
        "run takeip",
        base.tool(&["run", "30", "legacy", "takeip", "eth0", "10.0.0.1", "24"]),
    );
    step("status takeip", base.tool(&["status", "legacy", "takeip"]));
    step(
        "status never run",
        base.tool(&["status", "legacy", "startup"]),
    );
    step("run nosuch", base.tool(&["run", "30", "nosuch", "monitor"]));
    step("status nosuch", base.tool(&["status", "nosuch", "monitor"]));
    step("run empty", base.tool(&["run", "30", "empty", "monitor"]));
    step("status empty", base.tool(&["status", "empty", "monitor"]));
    step(
        "run weird (run all)",
        base.tool_env(
            &["run", "30", "weird", "monitor"],
            &[("CTDB_EVENT_RUN_ALL", "1")],
        ),
    );
    step("status weird", base.tool(&["status", "weird", "monitor"]));
    step("run weird", base.tool(&["run", "30", "weird", "monitor"]));
    step("status weird", base.tool(&["status", "weird", "monitor"]));
    step("run e65", base.tool(&["run", "30", "legacy", "e65"]));
    step("status e65", base.tool(&["status", "legacy", "e65"]));
    step("run killed", base.tool(&["run", "30", "legacy", "killed"]));
    step("status killed", base.tool(&["status", "legacy", "killed"]));
    step("run nul", base.tool(&["run", "30", "legacy", "nul"]));
    step("status nul", base.tool(&["status", "legacy", "nul"]));
    step(
        "run timeout 0",
        base.tool(&["run", "0", "legacy", "ipreallocated"]),
    );
    step(
        "status timeout 0",
        base.tool(&["status", "legacy", "ipreallocated"]),
    );
    step(
        "run startrecovery",
        base.tool(&["run", "1", "legacy", "startrecovery"]),
    );
    step(
        "status startrecovery",
        base.tool(&["status", "legacy", "startrecovery"]),
    );
    // Without a debug script the hung script is left running...
    let hung = base.pid_in("hung.pid");
    let child = base.pid_in("child.pid");
    step(
        "hung script still running",
        format!("{} {}", process_alive(hung), process_alive(child)),
    );
    step("script list", base.tool(&["script", "list", "legacy"]));
    step(
        "script disable",
        base.tool(&["script", "disable", "legacy", "01.ok"]),
    );
    step("script list", base.tool(&["script", "list", "legacy"]));
    step(
        "run after disable",
        base.tool(&["run", "30", "legacy", "monitor"]),
    );
    step(
        "status after disable",
        base.tool(&["status", "legacy", "monitor"]),
    );
    step(
        "script enable",
        base.tool(&["script", "enable", "legacy", "01.ok"]),
    );
    step(
        "script enable shipped",
        base.tool(&["script", "enable", "legacy", "06.unlinked"]),
    );
    step(
        "script disable shipped",
        base.tool(&["script", "disable", "legacy", "05.shipped"]),
    );
    step(
        "run after shipped changes",
        base.tool_env(
            &["run", "30", "legacy", "monitor"],
            &[("CTDB_EVENT_RUN_ALL", "1")],
        ),
    );
    step(
        "status after shipped changes",
        base.tool(&["status", "legacy", "monitor"]),
    );
    step(
        "script enable missing",
        base.tool(&["script", "enable", "legacy", "99.missing"]),
    );
    step("script list", base.tool(&["script", "list", "legacy"]));
    step("bad usage", base.tool(&["status", "legacy"]));
    // ...until eventd shuts down, which kills every process group it still tracks.
    step("exit code", format!("{:?}", daemon.stop()));
    let gone = wait_until(5, || !process_alive(hung) && !process_alive(child));
    step("hung script killed at shutdown", gone.to_string());
    kill_pid(child, libc::SIGKILL);
    kill_pid(hung, libc::SIGKILL);
    step(
        "run dir after exit",
        format!("{:?}", fs::read_dir(base.path("run")).unwrap().count()),
    );
    out
}

#[test]
fn tool_transcript_matches_stock() {
    if !stock_available() {
        return;
    }
    let stock = basic_transcript(Impl::Stock);
    let ours = basic_transcript(Impl::Ours);
    // Shown with --nocapture; on a mismatch the assertion prints both.
    eprintln!("{ours}");
    assert_eq!(ours, stock);
    // Sanity: the transcript exercised what it claims to.
    assert!(stock.contains("02.fail              ERROR      <time>"));
    assert!(stock.contains("TIMEDOUT"));
    assert!(stock.contains("hung script still running\ntrue true"));
    assert!(stock.contains("hung script killed at shutdown\ntrue"));
    // execv, not execvp: no /bin/sh fallback for a script without `#!`.
    assert!(stock.contains("01.noshebang         DISABLED"));
    assert!(stock.contains("04.dir               DISABLED  \n05.ok                OK"));
}

/// On timeout the debug script runs as `<script> <pid> <event>` and, once it finishes, the hung
/// script's whole process group (background children included) is terminated.
fn debug_script_transcript(imp: Impl) -> String {
    let base = Base::new("debug", imp);
    base.script("01.ok", OK_SCRIPT, true);
    base.script("02.hang", HANG_SCRIPT, true);
    base.file(
        "debug.sh",
        "#!/bin/sh\necho \"$@\" > \"$CTDB_BASE/debug.args\"\necho \"debugging $1\"\nsleep 1\n",
        0o755,
    );
    base.write_conf(Some("debug.sh"));
    let _daemon = Daemon::start(&base, imp);
    let mut out = base.tool(&["run", "1", "legacy", "hang"]);
    let hung = base.pid_in("hung.pid");
    let child = base.pid_in("child.pid");
    let args_path = base.path("debug.args");
    // The script creates the file before it writes it: wait for the whole line.
    assert!(
        wait_until(10, || fs::read_to_string(&args_path)
            .is_ok_and(|a| a.ends_with('\n'))),
        "{imp:?}: no debug run"
    );
    let args = fs::read_to_string(&args_path).unwrap();
    out.push_str(&format!(
        "debug args match: {}\n",
        args.trim() == format!("{hung} hang")
    ));
    let gone = wait_until(10, || !process_alive(hung) && !process_alive(child));
    out.push_str(&format!("group gone: {gone}\n"));
    kill_pid(child, libc::SIGKILL);
    kill_pid(hung, libc::SIGKILL);
    out.push_str(&mask(&base.tool(&["status", "legacy", "hang"])));
    let log = base.log();
    out.push_str(&format!(
        "\ndebug output logged: {}\n",
        log.contains(&format!("event_debug: debugging {hung}"))
    ));
    out
}

#[test]
fn timeout_runs_debug_script_and_kills_process_group_like_stock() {
    if !stock_available() {
        return;
    }
    let stock = debug_script_transcript(Impl::Stock);
    let ours = debug_script_transcript(Impl::Ours);
    assert_eq!(ours, stock);
    assert!(stock.contains("debug args match: true\ngroup gone: true"));
    assert!(stock.contains("debug output logged: true"));
}

/// Runs a slow event in the background until its script has started, then `second`.
fn overlap(base: &Base, first: &str, second: &str) -> String {
    let marker = base.path(&format!("{first}.pid"));
    let _ = fs::remove_file(&marker);
    let background = base
        .event_tool(&["run", "30", "legacy", first])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script_pid = base.pid_in(&format!("{first}.pid"));
    let second_out = base.tool(&["run", "30", "legacy", second]);
    let first_out = background.wait_with_output().unwrap();
    let first_alive = process_alive(script_pid);
    kill_pid(script_pid, libc::SIGKILL);
    format!(
        "{first}: {}rc={}\n{second}: {second_out}{first} script alive: {first_alive}\n",
        String::from_utf8_lossy(&first_out.stdout),
        first_out.status.code().unwrap_or(-1),
    )
}

fn cancel_transcript(imp: Impl) -> String {
    let base = Base::new("cancel", imp);
    base.script(
        "01.slow",
        "echo $$ > \"$CTDB_BASE/$1.pid\"\n[ -e \"$CTDB_BASE/slow\" ] && sleep 3\nexit 0\n",
        true,
    );
    fs::write(base.path("slow"), b"").unwrap();
    let _daemon = Daemon::start(&base, imp);
    let mut out = String::new();
    // A new event cancels a running monitor, whose script is killed.
    out.push_str(&overlap(&base, "monitor", "takeip"));
    out.push_str(&base.tool(&["status", "legacy", "monitor"]));
    // A monitor asked for while another event runs is cancelled at once.
    out.push_str(&overlap(&base, "recovered", "monitor"));
    // A monitor cancels a running monitor.
    out.push_str(&overlap(&base, "monitor", "monitor"));
    out.push_str(&mask(&base.tool(&["status", "legacy", "monitor"])));
    out
}

#[test]
fn cancellation_matches_stock() {
    if !stock_available() {
        return;
    }
    let stock = cancel_transcript(Impl::Stock);
    let ours = cancel_transcript(Impl::Ours);
    assert_eq!(ours, stock);
    assert!(stock.contains("got cancelled\nrc=125\ntakeip: rc=0\nmonitor script alive: false"));
}

fn watched_pid_transcript(imp: Impl) -> String {
    let base = Base::new("watch", imp);
    let mut watched = Command::new("sleep").arg("1000").spawn().unwrap();
    let mut daemon = Daemon::start_watching(&base, imp, watched.id());
    let pid_file = fs::read_to_string(base.path("run/eventd.pid")).unwrap();
    let mut out = format!(
        "pid file holds eventd pid: {}\n",
        pid_file.trim() == daemon.pid().to_string()
    );
    // A second eventd on the same CTDB_BASE cannot take the pid file.
    let (mut second, word) = Daemon::spawn(&base, imp, watched.id());
    out.push_str(&format!(
        "second: word {word:?} exit {:?}\n",
        second.wait_exit(10)
    ));
    watched.kill().unwrap();
    watched.wait().unwrap();
    // Checked 1 s after start and every 5 s after that.
    out.push_str(&format!("exit: {:?}\n", daemon.wait_exit(12)));
    out.push_str(&format!(
        "startup pipe closed: {}\n",
        read_word(&daemon.startup, 1000).is_none()
    ));
    out.push_str(&format!(
        "run dir after exit: {}\n",
        fs::read_dir(base.path("run")).unwrap().count()
    ));
    out
}

#[test]
fn exits_when_watched_pid_dies_like_stock() {
    if !stock_available() {
        return;
    }
    let stock = watched_pid_transcript(Impl::Stock);
    let ours = watched_pid_transcript(Impl::Ours);
    assert_eq!(ours, stock);
    assert!(stock.contains("exit: Some(3)"));
    assert!(stock.contains("second: word None exit Some(17)"));
}

fn script_protocol_transcript(imp: Impl) -> String {
    let base = Base::new("scriptreq", imp);
    base.script("01.ok", OK_SCRIPT, true);
    base.file("events/legacy/bad.script", "#!/bin/sh\n", 0o755);
    std::os::unix::fs::symlink(
        base.path("events/legacy/01.ok.script"),
        base.path("events/legacy/05.link.script"),
    )
    .unwrap();
    let _daemon = Daemon::start(&base, imp);
    let requests = [
        script_request(1, "legacy", "01.ok", false),
        script_request(2, "legacy", "01.ok.script", true),
        script_request(3, "legacy", "99.missing", true),
        script_request(4, "legacy", "bad", true),
        script_request(5, "legacy", "05.link", false),
        script_request(6, "nosuch", "01.ok", true),
        script_request(7, "legacy", "01.ok", false),
    ];
    let mut out = String::new();
    for reply in exchange(&base, &requests) {
        out.push_str(&format!("{} {:?}\n", reply.reqid, reply.body));
    }
    let mode = fs::metadata(base.path("events/legacy/01.ok.script"))
        .unwrap()
        .permissions()
        .mode();
    out.push_str(&format!("mode {:o}\n", mode & 0o777));
    // A packet that does not parse closes the connection.
    let mut stream = UnixStream::connect(base.path("run/eventd.socket")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut garbage = 16u32.to_ne_bytes().to_vec();
    garbage.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0]);
    stream.write_all(&garbage).unwrap();
    let mut buf = [0u8; 16];
    out.push_str(&format!(
        "after garbage: {:?}\n",
        stream.read(&mut buf).map_err(|e| e.kind())
    ));
    // And the daemon carries on serving others.
    let again = exchange(&base, &[script_request(8, "legacy", "01.ok", true)]);
    out.push_str(&format!("{:?}\n", again[0].body));
    out
}

#[test]
fn script_requests_match_stock() {
    if !stock_available() {
        return;
    }
    let stock = script_protocol_transcript(Impl::Stock);
    let ours = script_protocol_transcript(Impl::Ours);
    assert_eq!(ours, stock);
    assert!(stock.contains("3 Script(2)"));
    assert!(stock.contains("after garbage: Ok(0)"));
}

/// Several clients with requests in flight at once, each answered on its own connection with
/// its own reqid; STATUS is answered while a RUN is still going.
#[test]
fn concurrent_clients_are_served_independently() {
    let base = Base::new("many", Impl::Ours);
    base.script(
        "01.slow",
        "[ \"$1\" = startup ] && sleep 1\necho \"$1\"\nexit 0\n",
        true,
    );
    let _daemon = Daemon::start(&base, Impl::Ours);
    let run = |reqid: u32, event: &str| EventPacket {
        version: 0,
        reqid,
        body: EventRequest::Run(ctdb::protocol::event::RunRequest {
            component: Some("legacy".into()),
            event: Some(event.into()),
            args: None,
            timeout: 30,
            flags: 0,
        }),
    };
    let status = |reqid: u32, event: &str| EventPacket {
        version: 0,
        reqid,
        body: EventRequest::Status(ctdb::protocol::event::StatusRequest {
            component: Some("legacy".into()),
            event: Some(event.into()),
        }),
    };
    let first = exchange(&base, &[run(1, "setup")]);
    assert_eq!(first[0].body, EventReply::Run(0));
    let mut slow = UnixStream::connect(base.path("run/eventd.socket")).unwrap();
    slow.write_all(&run(77, "startup").to_bytes()).unwrap();
    // While startup runs, another client's STATUS is answered at once.
    let replies = exchange(&base, &[status(5, "setup"), status(6, "startup")]);
    assert_eq!(replies[0].reqid, 5);
    match &replies[0].body {
        EventReply::Status(Ok(s)) => {
            assert_eq!(s.scripts.len(), 1);
            assert_eq!(s.scripts[0].name.as_deref(), Some("01.slow"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        replies[1].body,
        EventReply::Status(Err(std::num::NonZeroI32::new(libc::EINVAL).unwrap()))
    );
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut frames = FrameBuffer::new();
    let mut buf = [0u8; 256];
    let reply = loop {
        if let Some(frame) = frames.next_frame().unwrap() {
            break EventReplyPacket::from_bytes_exact(&frame).unwrap();
        }
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0);
        frames.extend(&buf[..n]);
    };
    assert_eq!((reply.reqid, reply.body), (77, EventReply::Run(0)));
}

/// The scripts see the daemon's environment, `<name> <event> <args...>` as argv and the same
/// ignored signals as under stock (SIGPIPE not ignored). Returns the transcript without the
/// blocked-signal mask and the open fds, and those two.
fn environment_transcript(imp: Impl) -> (String, String, Vec<u32>) {
    let base = Base::new("env", imp);
    base.script(
        "01.env",
        "echo \"argv0=$0 args=$*\"\necho \"base=$CTDB_BASE\"\n\
         while read -r key value; do\n\
         \tcase \"$key\" in SigBlk:|SigIgn:) echo \"$key $value\" ;; esac\n\
         done < /proc/$$/status\n\
         fds=\nfor f in /proc/$$/fd/*; do fds=\"$fds ${f##*/}\"; done\necho \"fds:$fds\"\n\
         exit 1\n",
        true,
    );
    let _daemon = Daemon::start(&base, imp);
    let mut out = base.tool(&["run", "30", "legacy", "takeip", "eth0", "1.2.3.4", "24"]);
    out.push_str(&mask(&base.tool(&["status", "legacy", "takeip"])));
    let out = out.replace(&base.dir.display().to_string(), "<base>");
    let blocked = out
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk: "))
        .unwrap_or("missing")
        .to_string();
    let fds = out
        .lines()
        .find_map(|l| l.strip_prefix("fds:"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|fd| fd.parse().unwrap())
        .collect();
    let rest = out
        .lines()
        .filter(|l| !l.starts_with("SigBlk:") && !l.starts_with("fds:"))
        .collect::<Vec<_>>()
        .join("\n");
    (rest, blocked, fds)
}

#[test]
fn script_argv_environment_and_signals_match_stock() {
    if !stock_available() {
        return;
    }
    let (stock, stock_blocked, stock_fds) = environment_transcript(Impl::Stock);
    let (ours, ours_blocked, ours_fds) = environment_transcript(Impl::Ours);
    assert_eq!(ours, stock);
    assert!(stock.contains(
        "argv0=<base>/events/legacy/01.env.script args=takeip eth0 1.2.3.4 24\nbase=<base>\n"
    ));
    // The mask is read with shell builtins only: a forked `grep` would catch the shell inside
    // fork(), with every signal blocked. A script must not start with signals blocked, or a
    // timed-out one could not be terminated.
    assert_eq!(stock_blocked, "0000000000000000");
    assert_eq!(ours_blocked, stock_blocked);
    // Scripts inherit only what eventd itself inherited (stock also leaks a few of its own).
    assert!(
        ours_fds.contains(&1) && ours_fds.contains(&2),
        "{ours_fds:?}"
    );
    assert!(
        ours_fds.iter().all(|fd| stock_fds.contains(fd)),
        "ours {ours_fds:?} stock {stock_fds:?}"
    );
}

/// Kills a process by pid when dropped, unless disarmed.
struct PidGuard(Option<i32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_pid(pid, libc::SIGKILL);
        }
    }
}

/// Stock ctdbd, told to use our eventd through `CTDB_EVENTD`, starts it, runs its whole
/// start-up sequence of events through it, becomes healthy, and stops it at shutdown.
#[test]
fn stock_ctdbd_runs_its_events_through_our_eventd() {
    const CTDBD: &str = "/usr/sbin/ctdbd";
    const CTDB: &str = "/usr/bin/ctdb";
    if !Path::new(CTDBD).exists() || !Path::new(CTDB).exists() || !stock_available() {
        eprintln!("stock ctdbd not installed: skipped");
        return;
    }
    let base = Base::new("ctdbd", Impl::Ours);
    // A loopback address of our own, so that parallel runs do not fight over port 4379.
    let pid = std::process::id();
    let address = format!("127.213.{}.{}", (pid / 250) % 250 + 1, pid % 250 + 2);
    for dir in ["db/volatile", "db/persistent", "db/state"] {
        fs::create_dir_all(base.path(dir)).unwrap();
    }
    let dir = base.dir.display();
    fs::write(
        base.path("ctdb.conf"),
        format!(
            "[logging]\n\tlocation = file:{dir}/log.ctdb\n\tlog level = INFO\n\
             [cluster]\n\tnode address = {address}\n\
             [database]\n\tvolatile database directory = {dir}/db/volatile\n\
             \tpersistent database directory = {dir}/db/persistent\n\
             \tstate database directory = {dir}/db/state\n\
             [failover]\n\tdisabled = true\n"
        ),
    )
    .unwrap();
    fs::write(base.path("nodes"), format!("{address}\n")).unwrap();
    base.script(
        "01.log",
        "echo \"$*\" >> \"$CTDB_BASE/events.log\"\nexit 0\n",
        true,
    );
    let socket = base.path("run/ctdbd.socket");
    let ctdb = |args: &[&str]| {
        let out = Command::new(CTDB)
            .args(args)
            .env("CTDB_TEST_MODE", "yes")
            .env("CTDB_BASE", &base.dir)
            .env("CTDB_SOCKET", &socket)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code(),
        )
    };
    let mut ctdbd = Command::new(CTDBD)
        .arg("-i")
        .env("CTDB_TEST_MODE", "yes")
        .env("CTDB_BASE", &base.dir)
        .env("CTDB_SOCKET", &socket)
        .env("CTDB_EVENTD", OUR_EVENTD)
        .env_remove("CTDB_INTERACTIVE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(base.path("ctdbd.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut ctdbd_guard = PidGuard(Some(i32::try_from(ctdbd.id()).unwrap()));
    let healthy = wait_until(60, || ctdb(&["status"]).0.contains("OK (THIS NODE)"));
    let eventd_pid: i32 = fs::read_to_string(base.path("run/eventd.pid"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(-1);
    let mut eventd_guard = PidGuard((eventd_pid > 1).then_some(eventd_pid));
    let stderr = fs::read_to_string(base.path("ctdbd.stderr")).unwrap_or_default();
    assert!(healthy, "ctdbd never became healthy:\n{stderr}");
    assert!(
        stderr.contains(&format!("Starting event daemon {OUR_EVENTD} -P")),
        "{stderr}"
    );
    let events = fs::read_to_string(base.path("events.log")).unwrap();
    let order = [
        "init",
        "setup",
        "startrecovery",
        "recovered",
        "startup",
        "monitor",
    ];
    let mut lines = events.lines();
    for event in order {
        assert!(
            lines.any(|line| line == event),
            "{event} missing or out of order in:\n{events}"
        );
    }
    let (status, code) = ctdb(&["event", "status", "legacy", "monitor"]);
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.starts_with("01.log               OK         "),
        "{status}"
    );

    let (_, code) = ctdb(&["shutdown"]);
    assert_eq!(code, Some(0));
    let mut ctdbd_exited = false;
    wait_until(30, || {
        ctdbd_exited = ctdbd.try_wait().unwrap().is_some();
        ctdbd_exited
    });
    assert!(ctdbd_exited, "ctdbd did not shut down");
    ctdbd_guard.0 = None;
    assert!(
        wait_until(10, || !process_alive(eventd_pid)),
        "eventd outlived ctdbd"
    );
    eventd_guard.0 = None;
    assert!(!base.path("run/eventd.socket").exists());
    assert!(!base.path("run/eventd.pid").exists());
}

/// A client that goes away mid-run abandons its event: the script's process group is killed
/// and nothing is stored, as in stock. Unlike stock, no stale "running" marker is left behind,
/// so the next monitor runs instead of being cancelled.
#[test]
fn disconnect_mid_run_kills_the_script_and_moves_on() {
    let base = Base::new("gone", Impl::Ours);
    base.script(
        "01.slow",
        "echo $$ > \"$CTDB_BASE/$1.pid\"\n[ \"$1\" = startup ] && sleep 30\nexit 0\n",
        true,
    );
    let _daemon = Daemon::start(&base, Impl::Ours);
    let mut client = base
        .event_tool(&["run", "60", "legacy", "startup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let script = base.pid_in("startup.pid");
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(
        wait_until(10, || !process_alive(script)),
        "abandoned script still running"
    );
    kill_pid(script, libc::SIGKILL);
    assert_eq!(
        base.tool(&["status", "legacy", "startup"]),
        "Event startup has never run in legacy\nrc=22\n"
    );
    assert_eq!(base.tool(&["run", "30", "legacy", "monitor"]), "rc=0\n");
}
