//! The daemon's I/O shell, two ways:
//!
//! * in-process shells (one thread each) driving a scripted core, so that client framing,
//!   queue limits and the node transport can be checked against what the core is told and
//!   what it asks for, independent of how far the real core has got;
//! * the real `ctdbd` binary in test mode: pid file, socket, signals, stdin EOF, eventd.
//!
//! Addresses: in-process shells use 127.0.93.x, binaries 127.0.94.x, each test its own hosts.
//! Every process and thread is stopped by a guard, also when a test fails.

#![allow(clippy::disallowed_methods)] // Tests run shells on threads and time their waits.

use ctdb::common::clock::{Instant, MonotonicClock};
use ctdb::common::sys;
use ctdb::server::daemon::Host;
use ctdb::server::effect::{ClientId, Effect, EventOutcome, Pnn};
use ctdb::server::shell::eventd::Eventd;
use ctdb::server::shell::pacing::PacingLimits;
use ctdb::server::shell::queue::QueueLimits;
use ctdb::server::shell::tcp::{self, Transport, TransportLimits};
use ctdb::server::shell::{Core, ExitReason, OsHost, Shell, ShellLimits, ShellParts};
use ctdb::testing::{seeds, Prng};
use std::collections::{BTreeSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

const PORT: u16 = 4379;
const MAGIC: u32 = 0x4354_4442;

// Operations understood by the scripted core (client → core).
const OP_ECHO: u32 = 1000;
const OP_EXIT: u32 = 1001;
/// Reply with `reqid` frames of 64 KiB each.
const OP_FLOOD: u32 = 1002;
/// Send this frame to node `destnode`.
const OP_TO_NODE: u32 = 1003;
const OP_RESET_NODE: u32 = 1004;
const OP_CLOSE_ME: u32 = 1005;
/// Run the event named by the payload (words separated by spaces: event, then arguments),
/// with `reqid` as the run id and `destnode` as the timeout in seconds.
const OP_RUN_EVENT: u32 = 1006;
// Notifications (core → every client).
const NOTE_NODE_UP: u32 = 2000;
const NOTE_NODE_DOWN: u32 = 2001;
const NOTE_CLIENT_CLOSED: u32 = 2003;
/// An event finished: `reqid` = run id, `destnode` = result.
const NOTE_EVENT_DONE: u32 = 2004;

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A CTDB header plus payload; `pad` rounds the length up to 8 as daemons do.
fn frame(op: u32, dest: u32, reqid: u32, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut f = Vec::new();
    for word in [0u32, MAGIC, 1, 0, op, dest, 0, reqid] {
        f.extend_from_slice(&word.to_ne_bytes());
    }
    f.extend_from_slice(payload);
    if pad {
        f.resize(f.len().div_ceil(8) * 8, 0);
    }
    let len = u32::try_from(f.len()).unwrap();
    f[..4].copy_from_slice(&len.to_ne_bytes());
    f
}

fn word(frame: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(frame[at..at + 4].try_into().unwrap())
}

fn op_of(frame: &[u8]) -> u32 {
    word(frame, 16)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ctdb-rs-shell-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 93, last))
}

// --- the scripted core ---------------------------------------------------------------------

/// Echoes client frames, obeys the `OP_*` commands, and reports node and client events to
/// every connected client.
#[derive(Debug)]
struct ScriptCore {
    effects: VecDeque<Effect>,
    clients: BTreeSet<ClientId>,
    /// Nodes reported connected, replayed to each new client.
    nodes_up: BTreeSet<Pnn>,
}

impl ScriptCore {
    fn new() -> Self {
        ScriptCore {
            effects: VecDeque::from([Effect::StartTransport]),
            clients: BTreeSet::new(),
            nodes_up: BTreeSet::new(),
        }
    }

    fn tell_all(&mut self, frame: &[u8]) {
        for &client in &self.clients {
            self.effects.push_back(Effect::SendClient {
                client,
                frame: frame.to_vec(),
            });
        }
    }
}

impl Core for ScriptCore {
    fn on_client_connected(&mut self, _now: Instant, client: ClientId, _pid: i32) {
        self.clients.insert(client);
        for &pnn in &self.nodes_up {
            self.effects.push_back(Effect::SendClient {
                client,
                frame: frame(NOTE_NODE_UP, pnn, 0, &[], true),
            });
        }
    }
    fn on_client_frame(&mut self, _now: Instant, client: ClientId, f: &[u8], _host: &dyn Host) {
        let (dest, reqid) = (word(f, 20), word(f, 28));
        let effect = match op_of(f) {
            OP_EXIT => Effect::Exit {
                code: i32::try_from(reqid).unwrap(),
            },
            OP_FLOOD => {
                for _ in 0..reqid {
                    self.effects.push_back(Effect::SendClient {
                        client,
                        frame: frame(OP_FLOOD, 0, 0, &vec![0xab; 64 << 10], true),
                    });
                }
                return;
            }
            OP_TO_NODE => Effect::SendNode {
                pnn: dest,
                frame: f.to_vec(),
            },
            OP_RESET_NODE => Effect::ResetNode { pnn: dest },
            OP_CLOSE_ME => Effect::CloseClient { client },
            OP_RUN_EVENT => {
                let text = String::from_utf8_lossy(&f[32..]);
                let mut words = text.trim_end_matches('\0').split(' ').map(str::to_string);
                Effect::RunEvent {
                    id: u64::from(reqid),
                    event: words.next().unwrap_or_default(),
                    args: words.collect(),
                    timeout_s: dest,
                }
            }
            _ => Effect::SendClient {
                client,
                frame: f.to_vec(),
            },
        };
        self.effects.push_back(effect);
    }
    fn on_client_closed(&mut self, _now: Instant, client: ClientId) {
        assert!(self.clients.remove(&client), "client {client} closed twice");
        let id = u32::try_from(client).unwrap();
        self.tell_all(&frame(NOTE_CLIENT_CLOSED, 0, id, &[], true));
    }
    fn on_node_connected(&mut self, _now: Instant, pnn: Pnn) {
        self.nodes_up.insert(pnn);
        self.tell_all(&frame(NOTE_NODE_UP, pnn, 0, &[], true));
    }
    fn on_node_disconnected(&mut self, _now: Instant, pnn: Pnn) {
        self.nodes_up.remove(&pnn);
        self.tell_all(&frame(NOTE_NODE_DOWN, pnn, 0, &[], true));
    }
    fn on_node_frame(&mut self, _now: Instant, _pnn: Pnn, f: &[u8], _host: &dyn Host) {
        self.tell_all(f);
    }
    fn on_event_done(&mut self, _now: Instant, outcome: EventOutcome) {
        let id = u32::try_from(outcome.id).unwrap();
        let result = u32::from_ne_bytes(outcome.result.to_ne_bytes());
        self.tell_all(&frame(NOTE_EVENT_DONE, result, id, &[], true));
    }
    fn on_shutdown_request(&mut self, _now: Instant) {
        self.effects.push_back(Effect::Exit { code: 0 });
    }
    fn on_cluster_lock_test(&mut self, _now: Instant, _token: u64, _result: u8, _latency: f64) {}
    fn on_recoverd_exited(&mut self, _now: Instant) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }
}

// --- in-process shells ---------------------------------------------------------------------

/// A shell running on its own thread; dropping it makes the core exit and joins the thread.
struct RunningShell {
    dir: PathBuf,
    socket: PathBuf,
    handle: Option<JoinHandle<(ExitReason, i32)>>,
}

fn test_limits() -> ShellLimits {
    ShellLimits {
        partial_frame_timeout: Duration::from_secs(2),
        ..ShellLimits::default()
    }
}

fn start_shell(tag: &str, pnn: Pnn, nodes: &[Option<IpAddr>], limits: ShellLimits) -> RunningShell {
    start_shell_with(temp_dir(tag), pnn, nodes, limits, None)
}

fn start_shell_with(
    dir: PathBuf,
    pnn: Pnn,
    nodes: &[Option<IpAddr>],
    limits: ShellLimits,
    eventd: Option<Eventd>,
) -> RunningShell {
    let socket = dir.join("ctdbd.socket");
    let unix_listener = sys::bind_unix_socket(&socket).unwrap();
    let my_ip = nodes[pnn as usize].unwrap();
    let node_listener = tcp::listen(my_ip, PORT).unwrap();
    let transport = Transport::new(
        pnn,
        nodes,
        PORT,
        node_listener,
        TransportLimits {
            max_frame: limits.max_frame,
            queue: limits.node_queue,
            read_budget: limits.read_budget,
        },
    )
    .unwrap();
    let socket_path = socket.clone();
    let handle = std::thread::spawn(move || {
        let mut shell = Shell::new(ShellParts {
            core: ScriptCore::new(),
            clock: MonotonicClock::new(),
            unix_listener,
            socket_path,
            pid_file: None,
            transport,
            eventd,
            logger: None,
            host: OsHost::default(),
            signals: None,
            watch_stdin: false,
            limits,
            cluster_mutex_helper: "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper".into(),
            recoverd_argv: None,
        })
        .unwrap();
        shell.run()
    });
    RunningShell {
        dir,
        socket,
        handle: Some(handle),
    }
}

impl RunningShell {
    fn client(&self) -> TestClient {
        TestClient::connect(&self.socket)
    }

    /// Asks the core to exit with `code` and waits for the thread.
    fn exit(mut self, code: u32) -> (ExitReason, i32) {
        // The connection stays open until the shell is gone, so the request is always read.
        let mut client = self.client();
        client.send(&frame(OP_EXIT, 0, code, &[], true));
        self.join().expect("shell did not exit")
    }

    fn join(&mut self) -> Option<(ExitReason, i32)> {
        let handle = self.handle.take()?;
        for _ in 0..500 {
            if handle.is_finished() {
                return Some(handle.join().unwrap());
            }
            sleep(10);
        }
        None
    }
}

impl Drop for RunningShell {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let client = UnixStream::connect(&self.socket);
            if let Ok(mut s) = client.as_ref() {
                let _ = s.write_all(&frame(OP_EXIT, 0, 0, &[], true));
            }
            if self.join().is_none() {
                eprintln!(
                    "warning: shell thread in {} did not stop",
                    self.dir.display()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct TestClient {
    stream: UnixStream,
    /// Frames skipped while looking for another one, kept for later `wait_for`s.
    skipped: VecDeque<Vec<u8>>,
}

impl TestClient {
    fn connect(path: &Path) -> TestClient {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        TestClient {
            stream,
            skipped: VecDeque::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, or `None` on EOF/reset/timeout.
    fn recv(&mut self) -> Option<Vec<u8>> {
        read_frame(&mut self.stream)
    }

    /// Sends an echo request and expects it back (skipping notifications).
    fn assert_served(&mut self, reqid: u32) {
        let request = frame(OP_ECHO, 0, reqid, b"ping", false);
        self.send(&request);
        loop {
            let reply = self.recv().expect("no echo: client not served");
            if op_of(&reply) == OP_ECHO {
                assert_eq!(reply, request);
                return;
            }
            self.skipped.push_back(reply);
        }
    }

    /// Waits for a frame with this operation (and `destnode`, if given); other frames are kept
    /// for later calls.
    fn wait_for(&mut self, op: u32, dest: Option<u32>) -> Vec<u8> {
        let matches = |f: &[u8]| op_of(f) == op && dest.is_none_or(|d| word(f, 20) == d);
        if let Some(at) = self.skipped.iter().position(|f| matches(f)) {
            return self.skipped.remove(at).unwrap();
        }
        loop {
            let f = self
                .recv()
                .unwrap_or_else(|| panic!("connection ended waiting for op {op}"));
            if matches(&f) {
                return f;
            }
            self.skipped.push_back(f);
        }
    }
}

fn read_frame(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let mut f = prefix.to_vec();
    f.resize((u32::from_ne_bytes(prefix) as usize).max(4), 0);
    stream.read_exact(&mut f[4..]).ok()?;
    Some(f)
}

/// Whether the peer closes within `within` (EOF or reset), discarding anything it sends.
fn closed_within(stream: &mut impl Read, within: Duration) -> bool {
    let clock = MonotonicClock::new();
    let start = clock.now();
    let mut buf = [0u8; 4096];
    while clock.now().saturating_since(start) < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn set_timeout_tcp(s: &TcpStream, ms: u64) {
    s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
}

fn set_timeout_unix(s: &UnixStream, ms: u64) {
    s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
}

/// A TCP connection from `src` (any port) to `dst`, as a node would make it.
fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    )
    .unwrap();
    connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)).unwrap();
    TcpStream::from(fd)
}

// --- in-process tests: clients ---------------------------------------------------------------

#[test]
fn client_frames_are_checked_like_stock_and_service_continues() {
    let shell = start_shell("clients", 0, &[Some(ip(1))], test_limits());
    let mut good = shell.client();
    good.assert_served(1);

    // Bad magic, bad version and a 20-byte packet are dropped; the connection stays.
    let mut odd = shell.client();
    let mut bad_magic = frame(OP_ECHO, 0, 2, b"x", true);
    bad_magic[4] ^= 0xff;
    odd.send(&bad_magic);
    let mut bad_version = frame(OP_ECHO, 0, 3, b"x", true);
    bad_version[8] = 2;
    odd.send(&bad_version);
    let mut short = vec![0u8; 20];
    short[..4].copy_from_slice(&20u32.to_ne_bytes());
    odd.send(&short);
    odd.assert_served(4);

    // Length 0 and lengths above the limit close the client.
    for length in [0u32, u32::MAX, (256 << 20) + 8] {
        let mut c = shell.client();
        c.send(&length.to_ne_bytes());
        // The length alone may close the client: the rest can meet a closed socket (EPIPE).
        let _ = c.stream.write_all(&[0u8; 28]);
        set_timeout_unix(&c.stream, 200);
        assert!(
            closed_within(&mut c.stream, Duration::from_secs(3)),
            "length {length} not closed"
        );
        good.assert_served(5);
    }
    good.assert_served(6);
    assert_eq!(shell.exit(3), (ExitReason::Core, 3));
}

#[test]
fn random_bytes_on_the_unix_socket_never_stop_the_daemon() {
    let shell = start_shell("garbage", 0, &[Some(ip(2))], test_limits());
    let mut good = shell.client();
    for seed in seeds(10) {
        let mut rng = Prng::new(seed);
        let mut bad = shell.client();
        let mut junk = rng.bytes(4096);
        if rng.bool() {
            // A plausible header in front makes the junk reach the header checks.
            let mut f = frame(rng.u32(), rng.u32(), rng.u32(), &[], false);
            f.append(&mut junk);
            junk = f;
        }
        let _ = bad.stream.write_all(&junk);
        good.assert_served(u32::try_from(seed & 0xffff).unwrap());
    }
    good.assert_served(1);
}

#[test]
fn slow_partial_frames_are_dropped_while_others_are_served() {
    let shell = start_shell("slowloris", 0, &[Some(ip(3))], test_limits());
    let mut good = shell.client();
    let mut slow: Vec<TestClient> = (0..20).map(|_| shell.client()).collect();
    let request = frame(OP_ECHO, 0, 9, &[0u8; 64], true);
    for s in &mut slow {
        s.send(&request[..10]);
    }
    good.assert_served(1);
    sleep(500);
    good.assert_served(2);
    // The partial-frame timeout is 2 s in these tests.
    for s in &mut slow {
        set_timeout_unix(&s.stream, 200);
        assert!(closed_within(&mut s.stream, Duration::from_secs(5)));
    }
    good.assert_served(3);
}

#[test]
fn a_client_that_does_not_read_is_dropped_at_the_queue_limit() {
    let limits = ShellLimits {
        client_queue: QueueLimits {
            max_bytes: 1 << 20,
            max_frames: 1000,
        },
        ..test_limits()
    };
    let shell = start_shell("flood", 0, &[Some(ip(4))], limits);
    let mut watcher = shell.client();
    watcher.assert_served(1);
    let mut hog = shell.client();
    // 64 MiB of replies that are never read: far beyond socket buffers and the 1 MiB limit.
    hog.send(&frame(OP_FLOOD, 0, 1024, &[], true));
    let note = watcher.wait_for(NOTE_CLIENT_CLOSED, None);
    assert_eq!(word(&note, 28), 2, "the hog (client 2) was closed");
    watcher.assert_served(2);
    drop(hog);
}

/// Replies that do not fit the socket wait in the client's queue; the shell asks for
/// writability only then, and must still deliver every byte once the client reads again.
#[test]
fn a_slow_reader_still_receives_every_queued_reply() {
    let shell = start_shell("slowread", 0, &[Some(ip(61))], test_limits());
    let mut slow = shell.client();
    slow.assert_served(1);
    // 48 replies of 64 KiB: far more than a unix socket buffers, well under the queue limit.
    slow.send(&frame(OP_FLOOD, 0, 48, &[], true));
    sleep(300);
    let mut floods = 0;
    while floods < 48 {
        let f = slow.recv().expect("queued replies stopped coming");
        if op_of(&f) == OP_FLOOD {
            floods += 1;
        }
    }
    slow.assert_served(2);
}

#[test]
fn core_close_and_client_eof_are_each_reported_once() {
    let shell = start_shell("close", 0, &[Some(ip(5))], test_limits());
    let mut watcher = shell.client();
    watcher.assert_served(1);
    let mut a = shell.client();
    a.assert_served(2);
    // A request followed at once by EOF: the frame is still handled, then the close.
    let mut b = shell.client();
    b.send(&frame(OP_ECHO, 0, 3, b"last words", true));
    b.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(op_of(&b.recv().unwrap()), OP_ECHO);
    let note = watcher.wait_for(NOTE_CLIENT_CLOSED, None);
    assert_eq!(word(&note, 28), 3);
    a.send(&frame(OP_CLOSE_ME, 0, 0, &[], true));
    set_timeout_unix(&a.stream, 200);
    assert!(closed_within(&mut a.stream, Duration::from_secs(3)));
    let note = watcher.wait_for(NOTE_CLIENT_CLOSED, None);
    assert_eq!(word(&note, 28), 2);
    // The scripted core asserts that no client is reported closed twice.
    watcher.assert_served(4);
}

const PY_CLIENT: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
except OSError as e:
    print("connect-error", e.errno); sys.exit(0)
try:
    s.sendall(struct.pack("=IIIIIIII", 32, 0x43544442, 1, 0, 1000, 0, 0, 7))
    data = s.recv(64)
    print("closed" if not data else "served")
except (ConnectionResetError, BrokenPipeError):
    print("closed")
except socket.timeout:
    print("timeout")
"#;

/// Runs the Python client as uid/gid 65534 against `socket`.
fn connect_as_nobody(socket: &Path) -> String {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            PY_CLIENT,
        ])
        .arg(socket)
        .output()
        .expect("setpriv");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_client_of_another_user_is_refused_even_through_a_loosened_socket() {
    let shell = start_shell("nobody", 0, &[Some(ip(6))], test_limits());
    let mut root = shell.client();
    root.assert_served(1);
    // The directory must be searchable and the socket writable for the peer check to matter.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shell.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&shell.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(connect_as_nobody(&shell.socket), "closed");
    root.assert_served(2);
}

// --- in-process tests: the event daemon ----------------------------------------------------

/// Starts stock ctdb-eventd for a test base through a wrapper that sets its environment, so
/// the test process's own environment stays untouched.
fn start_eventd(base: &Path) -> Eventd {
    use std::os::unix::fs::PermissionsExt;
    let scripts = base.join("events/legacy");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::create_dir_all(base.join("run")).unwrap();
    let script = scripts.join("01.test.script");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}/args\ncase \"$1\" in\n\
             monitor|takeip) exit 0 ;;\nstartup) exit 3 ;;\nrecovered) sleep 3 ;;\nesac\n",
            base.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = base.join("eventd.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nCTDB_TEST_MODE=yes CTDB_BASE={} exec /usr/libexec/ctdb/ctdb-eventd \"$@\"\n",
            base.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    Eventd::start(
        &wrapper,
        &base.join("run/eventd.socket"),
        std::process::id(),
    )
    .unwrap()
}

fn run_event(c: &mut TestClient, id: u32, timeout_s: u32, words: &str) -> i32 {
    c.send(&frame(OP_RUN_EVENT, timeout_s, id, words.as_bytes(), true));
    loop {
        let note = c.wait_for(NOTE_EVENT_DONE, None);
        if word(&note, 28) == id {
            return i32::from_ne_bytes(word(&note, 20).to_ne_bytes());
        }
    }
}

#[test]
fn events_run_through_eventd_and_a_dead_eventd_ends_the_daemon() {
    let base = temp_dir("eventd");
    let eventd = start_eventd(&base);
    let eventd_pid = eventd.pid().unwrap();
    let mut shell = start_shell_with(
        base.clone(),
        0,
        &[Some(ip(51))],
        test_limits(),
        Some(eventd),
    );
    let mut c = shell.client();
    assert_eq!(run_event(&mut c, 1, 5, "monitor"), 0);
    assert_eq!(run_event(&mut c, 2, 5, "takeip eth0 10.1.2.3 24"), 0);
    assert_eq!(run_event(&mut c, 3, 5, "startup"), libc::ENOEXEC);
    assert_eq!(run_event(&mut c, 4, 1, "recovered"), libc::ETIMEDOUT);
    let args = std::fs::read_to_string(base.join("args")).unwrap();
    assert!(args.contains("takeip eth0 10.1.2.3 24\n"), "{args}");

    // A request in flight when eventd dies: the shell stops with EventdDied.
    c.send(&frame(OP_RUN_EVENT, 30, 5, b"recovered", true));
    sleep(200);
    signal(eventd_pid, nix::sys::signal::Signal::SIGKILL);
    let (reason, code) = shell.join().expect("shell did not stop");
    assert_eq!((reason, code), (ExitReason::EventdDied, 1));
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(eventd_pid), None);
}

// --- in-process tests: node transport --------------------------------------------------------

#[test]
fn two_shells_connect_exchange_frames_and_see_each_other_die() {
    let nodes = [Some(ip(11)), Some(ip(12))];
    let n0 = start_shell("pair0", 0, &nodes, test_limits());
    let n1 = start_shell("pair1", 1, &nodes, test_limits());
    let mut c0 = n0.client();
    let mut c1 = n1.client();
    c0.assert_served(1);
    c1.assert_served(1);
    c0.wait_for(NOTE_NODE_UP, Some(1));
    c1.wait_for(NOTE_NODE_UP, Some(0));

    // A frame sent by node 0's core arrives at node 1's core.
    let payload = frame(OP_TO_NODE, 1, 77, b"over the wire", true);
    c0.send(&payload);
    let got = c1.wait_for(OP_TO_NODE, Some(1));
    assert_eq!(got, payload);

    // Connections from outside the nodes file are refused; so is a second connection from a
    // node whose incoming link is up. Neither disturbs the existing link.
    let mut stranger = connect_from(ip(99), SocketAddr::new(ip(11), PORT));
    set_timeout_tcp(&stranger, 200);
    assert!(closed_within(&mut stranger, Duration::from_secs(3)));
    let mut twin = connect_from(ip(12), SocketAddr::new(ip(11), PORT));
    set_timeout_tcp(&twin, 200);
    assert!(closed_within(&mut twin, Duration::from_secs(3)));
    c0.send(&payload);
    assert_eq!(c1.wait_for(OP_TO_NODE, Some(1)), payload);

    // Node 1 goes away: node 0 reports it disconnected promptly.
    let clock = MonotonicClock::new();
    let start = clock.now();
    assert_eq!(n1.exit(0), (ExitReason::Core, 0));
    c0.wait_for(NOTE_NODE_DOWN, Some(1));
    assert!(clock.now().saturating_since(start) < Duration::from_secs(2));
    c0.assert_served(2);
}

/// Plays node 1 by hand against shell node 0: both directions established.
struct FakeNode {
    /// Node 0's outgoing connection, accepted by us (we must never write... except to test).
    from_n0: TcpStream,
    /// Our outgoing connection, node 0's incoming one.
    to_n0: TcpStream,
    listener: std::net::TcpListener,
}

fn fake_node(me: IpAddr, n0: IpAddr) -> FakeNode {
    let listener = std::net::TcpListener::bind((me, PORT)).unwrap();
    let (from_n0, peer) = listener.accept().unwrap();
    assert_eq!(
        peer.ip(),
        n0,
        "outgoing connections are bound to the node address"
    );
    let to_n0 = connect_from(me, SocketAddr::new(n0, PORT));
    FakeNode {
        from_n0,
        to_n0,
        listener,
    }
}

#[test]
fn bad_frames_from_a_node_kill_only_that_link() {
    let nodes = [Some(ip(21)), Some(ip(22))];
    let n0 = start_shell("badnode", 0, &nodes, test_limits());
    let mut c0 = n0.client();
    c0.assert_served(1);
    let listener = std::net::TcpListener::bind((ip(22), PORT)).unwrap();

    let good = frame(OP_ECHO, 0, 5, b"fine", true);
    let mut unaligned = frame(OP_ECHO, 0, 5, b"odd", false);
    let mut bad_magic = good.clone();
    bad_magic[4] = 0;
    let mut bad_version = good.clone();
    bad_version[8] = 9;
    let mut short = vec![0u8; 16];
    short[..4].copy_from_slice(&16u32.to_ne_bytes());
    let huge = u32::MAX.to_ne_bytes().to_vec();
    let zero = 0u32.to_ne_bytes().to_vec();
    if unaligned.len().is_multiple_of(8) {
        unaligned.push(0);
        let len = u32::try_from(unaligned.len()).unwrap();
        unaligned[..4].copy_from_slice(&len.to_ne_bytes());
    }
    let mut cases = vec![
        ("unaligned", unaligned),
        ("bad magic", bad_magic),
        ("bad version", bad_version),
        ("short", short),
        ("huge", huge),
        ("zero", zero),
    ];
    for seed in seeds(4) {
        cases.push(("random", Prng::new(seed).bytes(2000)));
    }
    for (what, bytes) in cases {
        let (mut from_n0, _) = listener.accept().unwrap();
        let mut to_n0 = connect_from(ip(22), SocketAddr::new(ip(21), PORT));
        c0.wait_for(NOTE_NODE_UP, Some(1));
        // A valid frame first: it reaches the core.
        to_n0.write_all(&good).unwrap();
        assert_eq!(c0.wait_for(OP_ECHO, None), good, "{what}");
        let _ = to_n0.write_all(&bytes);
        c0.wait_for(NOTE_NODE_DOWN, Some(1));
        set_timeout_tcp(&to_n0, 200);
        set_timeout_tcp(&from_n0, 200);
        assert!(closed_within(&mut to_n0, Duration::from_secs(3)), "{what}");
        assert!(
            closed_within(&mut from_n0, Duration::from_secs(3)),
            "{what}"
        );
        c0.assert_served(2);
    }
}

#[test]
fn data_on_the_outgoing_link_or_a_reset_tears_down_and_reconnects() {
    let nodes = [Some(ip(31)), Some(ip(32))];
    let n0 = start_shell("outgoing", 0, &nodes, test_limits());
    let mut c0 = n0.client();
    c0.assert_served(1);

    let mut fake = fake_node(ip(32), ip(31));
    c0.wait_for(NOTE_NODE_UP, Some(1));
    // Node 0 sends on its outgoing link, never on the incoming one.
    c0.send(&frame(OP_TO_NODE, 1, 8, b"hello", true));
    let got = read_frame(&mut fake.from_n0).unwrap();
    assert_eq!(op_of(&got), OP_TO_NODE);
    // The peer must never write on node 0's outgoing link: doing so marks it dead.
    fake.from_n0.write_all(b"surprise").unwrap();
    c0.wait_for(NOTE_NODE_DOWN, Some(1));
    set_timeout_tcp(&fake.to_n0, 200);
    assert!(closed_within(&mut fake.to_n0, Duration::from_secs(3)));

    // It reconnects at once; a ResetNode from the core drops both links again.
    let (from_n0, _) = fake.listener.accept().unwrap();
    let to_n0 = connect_from(ip(32), SocketAddr::new(ip(31), PORT));
    let mut fake = FakeNode {
        from_n0,
        to_n0,
        listener: fake.listener,
    };
    c0.wait_for(NOTE_NODE_UP, Some(1));
    c0.send(&frame(OP_RESET_NODE, 1, 0, &[], true));
    set_timeout_tcp(&fake.to_n0, 200);
    set_timeout_tcp(&fake.from_n0, 200);
    assert!(closed_within(&mut fake.to_n0, Duration::from_secs(3)));
    assert!(closed_within(&mut fake.from_n0, Duration::from_secs(3)));
    let (_again, _) = fake.listener.accept().unwrap();
    c0.assert_served(2);
}

#[test]
fn frames_to_a_node_that_is_down_are_dropped_silently() {
    let nodes = [Some(ip(41)), Some(ip(42)), None];
    let n0 = start_shell("dropped", 0, &nodes, test_limits());
    let mut c0 = n0.client();
    for pnn in [1u32, 2, 7] {
        c0.send(&frame(OP_TO_NODE, pnn, 1, b"lost", true));
    }
    c0.assert_served(1);
}

/// Limits for the pacing tests: a 2 MiB client queue, reads held above 512 KiB.
fn pacing_limits(pacing: PacingLimits) -> ShellLimits {
    ShellLimits {
        client_queue: QueueLimits {
            max_bytes: 2 << 20,
            max_frames: 10_000,
        },
        pacing,
        ..test_limits()
    }
}

const HOLDING: PacingLimits = PacingLimits {
    high_bytes: 512 << 10,
    low_bytes: 256 << 10,
    max_hold: Duration::from_secs(2),
};

/// Node 0's client sends `count` frames of 64 KiB to node 1, whose core hands each to every
/// client of node 1.
fn stream_to_node_1(c0: &mut TestClient, count: u32) {
    let chunk = vec![0x5a; 64 << 10];
    for i in 0..count {
        c0.send(&frame(OP_TO_NODE, 1, i, &chunk, true));
    }
}

/// Receives the `count` streamed frames in order, skipping notifications.
fn receive_stream(reader: &mut TestClient, count: u32) {
    for i in 0..count {
        let f = reader.wait_for(OP_TO_NODE, Some(1));
        assert_eq!(word(&f, 28), i, "frames arrive once each, in order");
    }
}

/// Two connected shells on 127.0.93.`first` and `first + 1` with `pacing`, a client of node 0
/// and `readers` clients of node 1, all past the node-up notes.
fn paced_pair(
    tag: &str,
    first: u8,
    pacing: PacingLimits,
    readers: usize,
) -> (RunningShell, RunningShell, TestClient, Vec<TestClient>) {
    let nodes = [Some(ip(first)), Some(ip(first + 1))];
    let n0 = start_shell(&format!("{tag}0"), 0, &nodes, pacing_limits(pacing));
    let n1 = start_shell(&format!("{tag}1"), 1, &nodes, pacing_limits(pacing));
    let mut c0 = n0.client();
    let mut clients: Vec<TestClient> = (0..readers).map(|_| n1.client()).collect();
    c0.wait_for(NOTE_NODE_UP, Some(1));
    for client in &mut clients {
        client.wait_for(NOTE_NODE_UP, Some(0));
    }
    (n0, n1, c0, clients)
}

/// A client that reads more slowly than a node sends to it: node reads are held back while its
/// queue is over the high mark, so it gets everything instead of being dropped at the queue
/// limit. The same stream with the brake off drops it (the test can fail).
#[test]
fn a_backlogged_client_holds_node_reads_back_instead_of_being_dropped() {
    let (n0, n1, mut c0, mut readers) = paced_pair("pace", 71, HOLDING, 1);
    let reader = &mut readers[0];
    // 6 MiB, three times the reader's queue limit, while the reader sleeps.
    stream_to_node_1(&mut c0, 96);
    sleep(500);
    receive_stream(reader, 96);
    reader.assert_served(1);
    drop((n0, n1, readers));

    let off = PacingLimits {
        high_bytes: usize::MAX,
        low_bytes: usize::MAX,
        ..HOLDING
    };
    let (_n0, _n1, mut c0, mut readers) = paced_pair("nopace", 73, off, 1);
    let reader = &mut readers[0];
    stream_to_node_1(&mut c0, 96);
    sleep(500);
    let mut received = 0;
    while let Some(f) = reader.recv() {
        received += u32::from(op_of(&f) == OP_TO_NODE);
    }
    assert!(
        received < 96,
        "without the brake the reader is dropped ({received} frames)"
    );
}

/// A client that stops reading holds node reads back only for `max_hold`: then the links are
/// read again, the other clients get their data, and the stuck one is dropped at its limit.
#[test]
fn a_stuck_client_holds_node_reads_back_only_for_a_bounded_time() {
    let limits = PacingLimits {
        max_hold: Duration::from_millis(500),
        ..HOLDING
    };
    // Client 1 never reads; client 2 does.
    let (_n0, _n1, mut c0, mut clients) = paced_pair("stuck", 75, limits, 2);
    let reader = &mut clients[1];
    let clock = MonotonicClock::new();
    let start = clock.now();
    stream_to_node_1(&mut c0, 96);
    receive_stream(reader, 96);
    let took = clock.now().saturating_since(start);
    assert!(
        took >= Duration::from_millis(400),
        "reads were held ({took:?})"
    );
    let note = reader.wait_for(NOTE_CLIENT_CLOSED, None);
    assert_eq!(word(&note, 28), 1, "the stuck client (client 1) is dropped");
    reader.assert_served(1);
}

// --- the ctdbd binary ------------------------------------------------------------------------

fn bin_ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 94, last))
}

/// A `CTDB_BASE` for one test-mode daemon.
fn make_base(tag: &str, me: IpAddr, nodes: &[IpAddr]) -> PathBuf {
    let base = temp_dir(&format!("bin-{tag}"));
    for sub in [
        "run",
        "events/legacy",
        "db/volatile",
        "db/persistent",
        "db/state",
    ] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    let b = base.display();
    std::fs::write(
        base.join("ctdb.conf"),
        format!(
            "[logging]\n location = file:{b}/log.ctdb\n log level = INFO\n\
             [cluster]\n node address = {me}\n\
             [database]\n volatile database directory = {b}/db/volatile\n\
             persistent database directory = {b}/db/persistent\n\
             state database directory = {b}/db/state\n"
        ),
    )
    .unwrap();
    let list: String = nodes.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(base.join("nodes"), list).unwrap();
    base
}

fn ctdbd_command(base: &Path) -> Command {
    with_env(Command::new(env!("CARGO_BIN_EXE_ctdbd")), base)
}

fn with_env(mut cmd: Command, base: &Path) -> Command {
    cmd.env("CTDB_TEST_MODE", "yes")
        .env("CTDB_BASE", base)
        .env("CTDB_EVENTD", "/usr/libexec/ctdb/ctdb-eventd")
        .env_remove("CTDB_SOCKET");
    cmd
}

/// Runs a foreground `ctdbd -i` with output in files (a stray child holding a pipe could
/// otherwise block the test), killing it after `within`. Returns the status and stderr.
fn run_foreground(base: &Path, within: Duration) -> (Option<i32>, String) {
    let err_path = base.join("stderr");
    let mut child = ctdbd_command(base)
        .arg("-i")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(base.join("stdout")).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(within, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    (status.and_then(|s| s.code()), stderr)
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let clock = MonotonicClock::new();
    let start = clock.now();
    while clock.now().saturating_since(start) < within {
        if cond() {
            return true;
        }
        sleep(20);
    }
    cond()
}

/// A daemon started in the background; dropping it kills the daemon and its eventd.
struct Daemon {
    base: PathBuf,
    pid: i32,
    eventd_pid: Option<i32>,
    stdin: Option<ChildStdin>,
}

impl Daemon {
    fn start(tag: &str, me: IpAddr, nodes: &[IpAddr]) -> Daemon {
        let base = make_base(tag, me, nodes);
        Self::launch(ctdbd_command(&base), base)
    }

    /// Starts the daemon with our own ctdb-eventd instead of stock's.
    fn start_with_our_eventd(tag: &str, me: IpAddr) -> Daemon {
        let base = make_base(tag, me, &[me]);
        let mut cmd = ctdbd_command(&base);
        cmd.env("CTDB_EVENTD", env!("CARGO_BIN_EXE_ctdb-eventd"));
        Self::launch(cmd, base)
    }

    /// Starts the daemon with at most `nofile` open files.
    fn start_limited(tag: &str, me: IpAddr, nofile: u32) -> Daemon {
        let base = make_base(tag, me, &[me]);
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg(env!("CARGO_BIN_EXE_ctdbd"));
        Self::launch(with_env(cmd, &base), base)
    }

    fn launch(mut command: Command, base: PathBuf) -> Daemon {
        let mut launcher: Child = command.stdin(Stdio::piped()).spawn().unwrap();
        let stdin = launcher.stdin.take();
        // The launcher forks and exits at once; the daemon is the child.
        assert!(launcher.wait().unwrap().success());
        let mut daemon = Daemon {
            pid: 0,
            eventd_pid: None,
            stdin,
            base,
        };
        let socket = daemon.socket();
        let pid_file = daemon.pid_file();
        let eventd_pid_file = daemon.base.join("run/eventd.pid");
        let up = wait_until(Duration::from_secs(10), || {
            match read_pid(&pid_file) {
                Some(pid) if alive(pid) => daemon.pid = pid,
                _ => return false,
            }
            daemon.eventd_pid = read_pid(&eventd_pid_file).filter(|&p| alive(p));
            socket.exists() && daemon.eventd_pid.is_some()
        });
        assert!(up, "daemon did not start:\n{}", daemon.log());
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.base.join("run/ctdbd.socket")
    }

    fn pid_file(&self) -> PathBuf {
        self.base.join("run/ctdbd.pid")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("log.ctdb")).unwrap_or_default()
    }

    /// Waits for the daemon to exit on its own (the core runs the shutdown event first).
    fn wait_exit(&self, within: Duration) {
        assert!(
            wait_until(within, || !alive(self.pid)),
            "daemon did not exit:\n{}",
            self.log()
        );
    }

    /// A client connection to the daemon's socket.
    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.socket()).unwrap();
        set_timeout_unix(&s, 5000);
        s
    }

    fn assert_cleaned_up(&self) {
        assert!(!self.socket().exists(), "socket left behind");
        assert!(!self.pid_file().exists(), "pid file left behind");
        if let Some(eventd) = self.eventd_pid {
            assert!(
                wait_until(Duration::from_secs(5), || !alive(eventd)),
                "eventd still running"
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for pid in [Some(self.pid), self.eventd_pid].into_iter().flatten() {
            if pid > 0 && alive(pid) {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn ctdbd_creates_pid_file_and_private_socket_and_refuses_a_second_instance() {
    let me = bin_ip(1);
    let d = Daemon::start("pidfile", me, &[me, bin_ip(2)]);
    assert_eq!(sys::file_mode(&d.socket()), Some(0o700));
    assert_eq!(read_pid(&d.pid_file()), Some(d.pid));
    let log = d.log();
    assert!(log.contains("PNN is 0"), "{log}");
    assert!(log.contains("Starting event daemon"), "{log}");

    // The node port is bound on the node address.
    let ss = Command::new("ss").args(["-tlnH"]).output().unwrap();
    let listening = String::from_utf8_lossy(&ss.stdout);
    assert!(listening.contains(&format!("{me}:{PORT}")), "{listening}");

    // A second daemon with the same base stops at the pid file, like stock (exit 11).
    let (code, stderr) = run_foreground(&d.base, Duration::from_secs(10));
    assert_eq!(code, Some(11), "{stderr}");
    assert!(alive(d.pid));
    assert!(d.socket().exists());
}

#[test]
fn ctdbd_shuts_down_on_sigterm_and_removes_socket_and_pid_file() {
    let me = bin_ip(3);
    let d = Daemon::start("sigterm", me, &[me]);
    signal(d.pid, nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(10));
    d.assert_cleaned_up();
    assert!(
        d.log().contains("Core finished; exiting with code 0"),
        "{}",
        d.log()
    );
}

#[test]
fn ctdbd_in_test_mode_shuts_down_when_stdin_closes() {
    let me = bin_ip(4);
    let mut d = Daemon::start("stdin", me, &[me]);
    d.stdin.as_mut().unwrap().write_all(b"ignored\n").unwrap();
    sleep(100);
    assert!(alive(d.pid), "data on stdin is not EOF");
    drop(d.stdin.take());
    assert!(
        wait_until(Duration::from_secs(3), || d.log().contains("stdin closed")),
        "{}",
        d.log()
    );
    d.wait_exit(Duration::from_secs(10));
    d.assert_cleaned_up();
}

#[test]
fn ctdbd_reopens_its_log_file_on_sighup() {
    let me = bin_ip(9);
    let d = Daemon::start("sighup", me, &[me]);
    let log = d.base.join("log.ctdb");
    std::fs::rename(&log, d.base.join("log.ctdb.1")).unwrap();
    signal(d.pid, nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(3), || d.log().contains("SIGHUP")),
        "no new log file"
    );
    assert!(alive(d.pid));
}

#[test]
fn ctdbd_socket_is_closed_to_other_users() {
    let me = bin_ip(5);
    let d = Daemon::start("perm", me, &[me]);
    use std::os::unix::fs::PermissionsExt;
    // Even with every directory on the way searchable, the 0700 socket refuses the connect.
    for dir in [d.base.clone(), d.base.join("run")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(connect_as_nobody(&d.socket()), "EACCES");
}

#[test]
fn ctdbd_exits_when_eventd_dies() {
    let me = bin_ip(6);
    let d = Daemon::start("eventd", me, &[me]);
    signal(d.eventd_pid.unwrap(), nix::sys::signal::Signal::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(d.pid)),
        "{}",
        d.log()
    );
    assert!(d.log().contains("Eventd went away"), "{}", d.log());
    d.assert_cleaned_up();
}

#[test]
fn ctdbd_refuses_a_node_address_missing_from_the_nodes_file() {
    let base = make_base("badaddr", bin_ip(7), &[bin_ip(8)]);
    let (code, stderr) = run_foreground(&base, Duration::from_secs(10));
    let leftovers = ["run/ctdbd.socket", "run/ctdbd.pid"].map(|f| base.join(f).exists());
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Can not determine PNN"), "{stderr}");
    assert_eq!(leftovers, [false, false], "a failed start cleans up");
}

const REQ_CONTROL: u32 = 7;
const REPLY_CONTROL: u32 = 8;
const CURRENT_NODE: u32 = 0xF000_0001;
const CONTROL_GET_PNN: u32 = 35;
const CONTROL_GET_NODEMAP: u32 = 91;
const NODE_DISCONNECTED: u32 = 1;

/// A `ctdb_req_control_old` as smbd writes it (unpadded unless `pad`).
fn control_request(opcode: u32, reqid: u32, pad: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&opcode.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes()); // pad
    body.extend_from_slice(&0u64.to_ne_bytes()); // srvid
    body.extend_from_slice(&0u32.to_ne_bytes()); // client_id
    body.extend_from_slice(&0u32.to_ne_bytes()); // flags
    body.extend_from_slice(&0u32.to_ne_bytes()); // datalen
    frame(REQ_CONTROL, CURRENT_NODE, reqid, &body, pad)
}

/// Sends a control and returns its status and data.
fn control(stream: &mut UnixStream, opcode: u32, reqid: u32, pad: bool) -> (i32, Vec<u8>) {
    stream
        .write_all(&control_request(opcode, reqid, pad))
        .unwrap();
    loop {
        let reply = read_frame(stream).expect("no reply to control");
        if op_of(&reply) != REPLY_CONTROL || word(&reply, 28) != reqid {
            continue;
        }
        let status = i32::from_ne_bytes(word(&reply, 32).to_ne_bytes());
        let datalen = word(&reply, 36) as usize;
        return (status, reply[44..44 + datalen].to_vec());
    }
}

/// Node flags from a GET_NODEMAP reply: u32 count, then 36-byte entries (pnn, flags, addr).
fn nodemap_flags(data: &[u8]) -> Vec<u32> {
    let count = word(data, 0) as usize;
    (0..count).map(|i| word(data, 4 + i * 36 + 4)).collect()
}

#[test]
fn ctdbd_answers_controls_from_padded_and_unpadded_clients() {
    let nodes = [bin_ip(21), bin_ip(22)];
    let d = Daemon::start("getpnn", nodes[1], &nodes);
    assert!(
        wait_until(Duration::from_secs(10), || UnixStream::connect(d.socket())
            .is_ok_and(|mut s| {
                set_timeout_unix(&s, 300);
                s.write_all(&control_request(CONTROL_GET_PNN, 1, true))
                    .is_ok()
                    && read_frame(&mut s).is_some()
            })),
        "no answer:\n{}",
        d.log()
    );
    let mut c = d.connect();
    assert_eq!(control(&mut c, CONTROL_GET_PNN, 2, true).0, 1);
    // smbd does not pad: a 60-byte control is answered all the same.
    assert_eq!(control(&mut c, CONTROL_GET_PNN, 3, false).0, 1);
    // Garbage on another connection does not disturb this one.
    let mut junk = d.connect();
    let _ = junk.write_all(&Prng::new(7).bytes(3000));
    assert_eq!(control(&mut c, CONTROL_GET_PNN, 4, false).0, 1);
}

#[test]
fn ctdbd_runs_events_through_our_own_eventd() {
    let me = bin_ip(24);
    let d = Daemon::start_with_our_eventd("oureventd", me);
    let mut c = d.connect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            set_timeout_unix(&c, 300);
            c.write_all(&control_request(CONTROL_GET_PNN, 1, true))
                .is_ok()
                && read_frame(&mut c).is_some()
        }),
        "{}",
        d.log()
    );
    signal(d.pid, nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(10));
    d.assert_cleaned_up();
    assert!(
        d.log().contains("Core finished; exiting with code 0"),
        "{}",
        d.log()
    );
}

#[test]
fn ctdbd_survives_running_out_of_file_descriptors() {
    let me = bin_ip(23);
    let d = Daemon::start_limited("nofile", me, 64);
    let mut first = d.connect();
    assert!(wait_until(Duration::from_secs(10), || {
        set_timeout_unix(&first, 300);
        first
            .write_all(&control_request(CONTROL_GET_PNN, 1, true))
            .is_ok()
            && read_frame(&mut first).is_some()
    }));
    set_timeout_unix(&first, 5000);
    // More clients than the daemon has descriptors for: the kernel queues the excess.
    let mut crowd: Vec<UnixStream> = (0..90)
        .filter_map(|_| UnixStream::connect(d.socket()).ok())
        .collect();
    // A second of retries every 100 ms: the failure is logged once, not ten times.
    sleep(1000);
    assert_eq!(control(&mut first, CONTROL_GET_PNN, 2, true).0, 0);
    let failures = d
        .log()
        .matches("Failed to accept client connection")
        .count();
    assert_eq!(failures, 1, "{}", d.log());
    // Freeing descriptors lets the waiting clients in; the newest one gets served.
    let mut last = crowd.pop().unwrap();
    crowd.truncate(10);
    set_timeout_unix(&last, 5000);
    assert_eq!(control(&mut last, CONTROL_GET_PNN, 3, true).0, 0);
    assert!(alive(d.pid));
}

#[test]
fn three_daemons_start_and_survive_the_kill_of_one() {
    let nodes = [bin_ip(11), bin_ip(12), bin_ip(13)];
    let daemons: Vec<Daemon> = nodes
        .iter()
        .enumerate()
        .map(|(i, &me)| Daemon::start(&format!("three{i}"), me, &nodes))
        .collect();
    for (i, d) in daemons.iter().enumerate() {
        assert!(d.log().contains(&format!("PNN is {i}")), "{}", d.log());
    }
    let flags = |d: &Daemon| {
        UnixStream::connect(d.socket())
            .ok()
            .map(|mut s| {
                set_timeout_unix(&s, 2000);
                nodemap_flags(&control(&mut s, CONTROL_GET_NODEMAP, 9, true).1)
            })
            .unwrap_or_default()
    };
    let all_connected = |d: &Daemon| {
        let f = flags(d);
        f.len() == 3 && f.iter().all(|f| f & NODE_DISCONNECTED == 0)
    };
    for d in &daemons {
        assert!(
            wait_until(Duration::from_secs(15), || all_connected(d)),
            "not all connected: {:?}\n{}",
            flags(d),
            d.log()
        );
    }
    let clock = MonotonicClock::new();
    let killed = clock.now();
    signal(daemons[1].pid, nix::sys::signal::Signal::SIGKILL);
    for d in [&daemons[0], &daemons[2]] {
        assert!(
            wait_until(Duration::from_secs(5), || flags(d)
                .get(1)
                .is_some_and(|f| f & NODE_DISCONNECTED != 0)),
            "node 1 not disconnected: {:?}",
            flags(d)
        );
    }
    let took = clock.now().saturating_since(killed);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(alive(daemons[0].pid) && alive(daemons[2].pid));
    // The survivors still see each other.
    assert_eq!(flags(&daemons[0])[2] & NODE_DISCONNECTED, 0);
}
