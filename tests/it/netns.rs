//! IP failover on real interfaces: three nodes, each in its own network namespace with a veth
//! on a bridge, the stock `10.interface` event script, and a client namespace on the same
//! bridge watching the wire with tcpdump. Needs root; skipped (with a message) otherwise.
//!
//! `{ours,stock}_fail*_over_real_interfaces` run the same scenario against our daemon and
//! stock's: addresses land in exactly one kernel each, where CTDB says; two client
//! connections (one registered with TCP_CLIENT as smbd does, one with `ctdb addtickle`) to a
//! node that is then killed are reset by the heir's tickle ACKs after its gratuitous ARP;
//! the restarted node drops its stale addresses; `ctdb moveip` moves an IPv4 and an IPv6
//! address between kernels with a gratuitous ARP / unsolicited neighbour advertisement from
//! the new host. `announcements_and_tickles_on_the_wire` checks the raw frames alone.
//!
//! Configuration that works for stock 4.17 and for ours: `CTDB_TEST_MODE` is NOT set, because
//! test mode turns off `do_checkpublicip` and with it every gratuitous ARP and tickle ACK. Each
//! daemon instead gets private copies of the compiled-in directories: it runs under
//! `ip netns exec` (which gives it a mount namespace of its own) after a shell bind-mounts the
//! node's directories on `/etc/ctdb` and `/var/lib/ctdb` and a fresh tmpfs with the node's run
//! directory on `/run/ctdb`. The event scripts it starts see the same mounts, so `ctdb` calls
//! in them reach their own daemon. The test talks to each daemon through `CTDB_SOCKET`.
//!
//! Only `10.interface` is enabled (no iptables on the test machine: its `ip_block` fails
//! harmlessly). `ctdb.tunables` sets `TickleUpdateInterval=1` so that a tickle added on one
//! node reaches the others within a second.
//!
//! Addresses: `10.231.S.0/24` where S depends on the test process and the lab; node n has
//! `.n+1`, public addresses are `.101..103` on `eth0`, the client is `.200`. MAC addresses are
//! fixed (`02:31:S:00:00:<host>`) so captured frames name their sender. Namespaces are
//! `ctrs<pid><lab>{n0,n1,n2,cl,sw}`; the bridge lives in the `sw` one. `CTDB_TEST_KEEP=1`
//! keeps the directory (logs, capture) for a post-mortem; namespaces always go.

use crate::cluster::{our_ctdbd, our_eventd, Flavour, STOCK_CTDB, STOCK_CTDBD};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NODES: u32 = 3;
const SERVICE_PORT: u16 = 4999;
const LIMIT: Duration = Duration::from_secs(45);

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, limit: Duration, mut pred: impl FnMut() -> bool) -> Duration {
    #[allow(clippy::disallowed_methods)] // Test harness timing.
    let start = Instant::now();
    loop {
        if pred() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why the test cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, veths, bind mounts)".into());
    }
    for tool in ["ip", "tcpdump"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("no `{tool}` command"));
        }
    }
    let probe = format!(
        "ctrs{}probe{:?}",
        std::process::id(),
        std::thread::current().id()
    )
    .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let added = run("ip", &["netns", "add", &probe]);
    if !added.status.success() {
        return Some(format!(
            "`ip netns add` fails: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        ));
    }
    let _ = run("ip", &["netns", "del", &probe]);
    None
}

/// The namespaces, the bridge, the daemons and the capture of one test; all of it goes away
/// when the guard is dropped, whatever happened.
#[derive(Debug)]
struct Lab {
    flavour: Flavour,
    tag: String,
    subnet: u8,
    dir: PathBuf,
    namespaces: Vec<String>,
    daemons: BTreeMap<u32, Child>,
    capture: Option<Child>,
    started: Instant,
}

impl Lab {
    /// `number` (0..3) tells the labs of one test process apart: names, subnet and MACs.
    fn new(flavour: Flavour, number: u8) -> Self {
        let letter = char::from(b'a' + number);
        let pid = std::process::id();
        let tag = format!("ctrs{pid}{letter}");
        let subnet = u8::try_from((pid % 80) * 3 + u32::from(number)).unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("ctdb-rs-it-netns-{pid}-{letter}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut lab = Lab {
            flavour,
            tag,
            subnet,
            dir,
            namespaces: Vec::new(),
            daemons: BTreeMap::new(),
            capture: None,
            #[allow(clippy::disallowed_methods)] // Test harness timing.
            started: Instant::now(),
        };
        lab.wire();
        lab
    }

    fn switch(&self) -> String {
        format!("{}sw", self.tag)
    }

    fn node_ns(&self, pnn: u32) -> String {
        format!("{}n{pnn}", self.tag)
    }

    fn client_ns(&self) -> String {
        format!("{}cl", self.tag)
    }

    fn node_ip(&self, pnn: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, u8::try_from(pnn + 1).unwrap())
    }

    fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 200)
    }

    /// An IPv6 address of the lab: `fd31:0:0:S::host`.
    fn v6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd31, 0, 0, u16::from(self.subnet), 0, 0, 0, host)
    }

    /// One IPv4 public address per node and one IPv6 address.
    fn public_ips(&self) -> Vec<IpAddr> {
        (0..NODES)
            .map(|i| Ipv4Addr::new(10, 231, self.subnet, u8::try_from(101 + i).unwrap()).into())
            .chain([self.v6(0x65).into()])
            .collect()
    }

    fn mac(&self, host: u8) -> String {
        format!("02:31:{:02x}:00:00:{host:02x}", self.subnet)
    }

    fn node_mac(&self, pnn: u32) -> String {
        self.mac(u8::try_from(pnn + 1).unwrap())
    }

    fn add_ns(&mut self, name: &str) {
        must("ip", &["netns", "add", name]);
        self.namespaces.push(name.to_string());
        must("ip", &["-n", name, "link", "set", "lo", "up"]);
    }

    /// A host namespace with `eth0` on the bridge.
    fn add_host(&mut self, ns: &str, port: &str, ip: Ipv4Addr, mac: &str, ipv6: bool) {
        self.add_ns(ns);
        let switch = self.switch();
        must(
            "ip",
            &[
                "link", "add", "eth0", "netns", ns, "address", mac, "type", "veth", "peer", "name",
                port, "netns", &switch,
            ],
        );
        must(
            "ip",
            &["-n", &switch, "link", "set", port, "master", "br0", "up"],
        );
        if !ipv6 {
            let _ = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                ],
            );
        }
        must(
            "ip",
            &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        must("ip", &["-n", ns, "link", "set", "eth0", "up"]);
    }

    fn wire(&mut self) {
        let switch = self.switch();
        self.add_ns(&switch);
        must(
            "ip",
            &["-n", &switch, "link", "add", "br0", "type", "bridge"],
        );
        must("ip", &["-n", &switch, "link", "set", "br0", "up"]);
        for pnn in 0..NODES {
            let (ns, ip, mac) = (self.node_ns(pnn), self.node_ip(pnn), self.node_mac(pnn));
            self.add_host(&ns, &format!("pn{pnn}"), ip, &mac, true);
        }
        let (ns, ip, mac) = (self.client_ns(), self.client_ip(), self.mac(200));
        // The client's IPv6 would only add DAD and router solicitations to the capture.
        self.add_host(&ns, "pcl", ip, &mac, false);
    }

    fn node_dir(&self, pnn: u32) -> PathBuf {
        self.dir.join(format!("node.{pnn}"))
    }

    fn socket(&self, pnn: u32) -> PathBuf {
        self.node_dir(pnn).join("run/ctdbd.socket")
    }

    /// `/etc/ctdb`, `/run/ctdb` and `/var/lib/ctdb` of each node, with only `10.interface`
    /// enabled (a link to the packaged script, as `ctdb event script enable` makes it).
    fn configure(&self) {
        let nodes: String = (0..NODES)
            .map(|n| format!("{}\n", self.node_ip(n)))
            .collect();
        let publics: String = self
            .public_ips()
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(_) => format!("{ip}/24 eth0\n"),
                IpAddr::V6(_) => format!("{ip}/64 eth0\n"),
            })
            .collect();
        let lock = self.dir.join("cluster.lock");
        for pnn in 0..NODES {
            let base = self.node_dir(pnn);
            let etc = base.join("etc");
            fs::create_dir_all(etc.join("events/legacy")).unwrap();
            fs::create_dir_all(base.join("run")).unwrap();
            for sub in ["volatile", "persistent", "state", "scripts"] {
                fs::create_dir_all(base.join("var").join(sub)).unwrap();
            }
            fs::write(etc.join("nodes"), &nodes).unwrap();
            fs::write(etc.join("public_addresses"), &publics).unwrap();
            fs::copy("/etc/ctdb/functions", etc.join("functions")).unwrap();
            // Tickles registered with `ctdb addtickle` reach the other nodes with the next
            // periodic update; the default 20 s would dominate the test's run time.
            fs::write(etc.join("ctdb.tunables"), "TickleUpdateInterval=1\n").unwrap();
            std::os::unix::fs::symlink(
                "/usr/share/ctdb/events/legacy/10.interface.script",
                etc.join("events/legacy/10.interface.script"),
            )
            .unwrap();
            fs::write(
                etc.join("ctdb.conf"),
                format!(
                    "[logging]\n\tlog level = INFO\n[cluster]\n\tnode address = {}\n\
                     \tcluster lock = {}\n",
                    self.node_ip(pnn),
                    lock.display()
                ),
            )
            .unwrap();
        }
    }

    /// Starts node `pnn` in its namespaces, in the foreground (`--interactive`, logging to
    /// `ctdbd.out`), so the child is the daemon.
    fn start(&mut self, pnn: u32) {
        let base = self.node_dir(pnn);
        let ctdbd = match self.flavour {
            Flavour::Stock => PathBuf::from(STOCK_CTDBD),
            Flavour::Ours => our_ctdbd(),
        };
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(base.join("ctdbd.out"))
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node_ns(pnn), "sh", "-c"])
            .arg(
                "set -e; mount -t tmpfs ctdb-run /run; mkdir /run/ctdb; \
                 mount --bind \"$1/run\" /run/ctdb; mount --bind \"$1/etc\" /etc/ctdb; \
                 mount --bind \"$1/var\" /var/lib/ctdb; shift; exec \"$@\" --interactive",
            )
            .arg("sh")
            .arg(&base)
            .arg(&ctdbd)
            .env_remove("CTDB_TEST_MODE")
            .env_remove("CTDB_BASE")
            .env_remove("CTDB_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if self.flavour == Flavour::Ours {
            cmd.env("CTDB_EVENTD", our_eventd())
                .env(
                    "CTDB_RECOVERY_HELPER",
                    env!("CARGO_BIN_EXE_ctdb_recovery_helper"),
                )
                .env(
                    "CTDB_CLUSTER_MUTEX_HELPER",
                    env!("CARGO_BIN_EXE_ctdb_mutex_fcntl_helper"),
                );
        }
        let child = cmd.spawn().unwrap();
        self.daemons.insert(pnn, child);
        let socket = self.socket(pnn);
        wait_for(&format!("node {pnn}'s socket"), LIMIT, || {
            socket.exists() && self.ctdb(pnn, &["pnn"]).status.success()
        });
    }

    /// SIGKILL to a node's daemon. Returns once its event daemon has gone too: stock's
    /// ctdb-eventd notices its parent's death only at its next check, and a new daemon
    /// started before then fails to start its own (the old one still holds the pid file).
    fn kill(&mut self, pnn: u32) {
        let eventd = fs::read_to_string(self.node_dir(pnn).join("run/eventd.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        if let Some(mut child) = self.daemons.remove(&pnn) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = eventd {
            let pid = nix::unistd::Pid::from_raw(pid);
            wait_for(&format!("node {pnn}'s eventd to exit"), LIMIT, || {
                nix::sys::signal::kill(pid, None).is_err()
            });
        }
        let _ = fs::remove_file(self.socket(pnn));
    }

    fn ctdb(&self, pnn: u32, args: &[&str]) -> Output {
        Command::new(STOCK_CTDB)
            .args(args)
            .env_remove("CTDB_TEST_MODE")
            .env_remove("CTDB_BASE")
            .env("CTDB_SOCKET", self.socket(pnn))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ctdb_ok(&self, pnn: u32, args: &[&str]) -> String {
        let out = self.ctdb(pnn, args);
        assert!(
            out.status.success(),
            "ctdb {args:?} on node {pnn} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The global addresses on a node's `eth0`, as the kernel has them.
    fn kernel_addresses(&self, pnn: u32) -> Vec<IpAddr> {
        must(
            "ip",
            &[
                "-n",
                &self.node_ns(pnn),
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ],
        )
        .lines()
        .filter(|l| l.contains("scope global"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
    }

    /// Which node's kernel holds each public address, when every one is on exactly one of
    /// the `nodes`.
    fn kernel_hosts(&self, nodes: &[u32]) -> Option<BTreeMap<IpAddr, u32>> {
        let mut hosts: BTreeMap<IpAddr, Vec<u32>> = BTreeMap::new();
        for &n in nodes {
            for ip in self.kernel_addresses(n) {
                hosts.entry(ip).or_default().push(n);
            }
        }
        self.public_ips()
            .into_iter()
            .map(|ip| match hosts.get(&ip).map(Vec::as_slice) {
                Some(&[n]) => Some((ip, n)),
                _ => None,
            })
            .collect()
    }

    /// Who CTDB says hosts each public address (`ctdb -X ip` on `pnn`).
    fn ctdb_hosts(&self, pnn: u32) -> BTreeMap<IpAddr, i64> {
        self.ctdb(pnn, &["-X", "ip"])
            .stdout
            .split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|l| {
                let l = String::from_utf8_lossy(l);
                let mut f = l.split('|').skip(1);
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
            })
            .collect()
    }

    /// Waits until the kernels of the running `nodes` agree with CTDB (as `nodes[0]` sees it)
    /// on one host for each public address, `done` holds, and nothing has changed for a
    /// second; returns the assignment.
    fn wait_placed(
        &self,
        what: &str,
        nodes: &[u32],
        done: impl Fn(&BTreeMap<IpAddr, u32>) -> bool,
    ) -> BTreeMap<IpAddr, u32> {
        let mut last: Option<(BTreeMap<IpAddr, u32>, u32)> = None;
        wait_for(what, LIMIT, || {
            let Some(kernel) = self.kernel_hosts(nodes) else {
                last = None;
                return false;
            };
            let ctdb = self.ctdb_hosts(nodes[0]);
            let agreed = kernel
                .iter()
                .all(|(ip, &n)| ctdb.get(ip) == Some(&i64::from(n)));
            if !agreed || !done(&kernel) {
                last = None;
                return false;
            }
            match &mut last {
                Some((prev, count)) if *prev == kernel => {
                    *count += 1;
                    *count >= 10
                }
                _ => {
                    last = Some((kernel, 0));
                    false
                }
            }
        });
        let placed = last.map(|(p, _)| p).unwrap_or_default();
        self.step(&format!("{what}: {placed:?}"));
        placed
    }

    /// Logs progress with the time since the lab was set up.
    fn step(&self, what: &str) {
        eprintln!(
            "[netns {:?} +{:.1}s] {what}",
            self.flavour,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// tcpdump on the client's `eth0`, one line per frame (`-e`: with MAC addresses).
    fn start_capture(&mut self, options: &[&str]) -> PathBuf {
        let file = self.dir.join("capture.txt");
        let err = self.dir.join("capture.err");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.client_ns()])
            .args(["tcpdump", "-i", "eth0", "-nn", "-e", "-l", "-U"])
            .args(options)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&file).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        self.capture = Some(child);
        wait_for("tcpdump to listen", LIMIT, || {
            fs::read_to_string(&err).is_ok_and(|t| t.contains("listening on"))
        });
        file
    }

    fn dump_logs(&self) {
        for pnn in 0..NODES {
            if let Ok(text) = fs::read_to_string(self.node_dir(pnn).join("ctdbd.out")) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- node {pnn} log tail ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        if let Ok(text) = fs::read_to_string(self.dir.join("capture.txt")) {
            eprintln!("--- capture ---\n{text}");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let pnns: Vec<u32> = self.daemons.keys().copied().collect();
        for pnn in pnns {
            self.kill(pnn);
        }
        if let Some(mut child) = self.capture.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
        if std::env::var_os("CTDB_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Moves the calling thread into a network namespace (sockets it opens afterwards live there).
fn enter_netns(name: &str) {
    let ns = fs::File::open(Path::new("/run/netns").join(name)).unwrap();
    // SAFETY: setns on an open namespace file; only this thread's network namespace changes.
    let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .unwrap()
}

/// Lines of the capture that match every one of `words`.
fn captured(file: &Path, words: &[&str]) -> Vec<String> {
    captured_after(file, 0, words)
}

fn captured_lines(file: &Path) -> usize {
    fs::read_to_string(file).unwrap_or_default().lines().count()
}

/// Lines after the first `skip` that match every one of `words`.
fn captured_after(file: &Path, skip: usize, words: &[&str]) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .skip(skip)
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// Waits for a gratuitous ARP for `ip` sent from `mac`, after the first `skip` lines.
fn wait_garp(file: &Path, skip: usize, ip: IpAddr, mac: &str) {
    let request = format!("Request who-has {ip} tell {ip},");
    let reply = format!("Reply {ip} is-at {mac}");
    wait_for(
        &format!("gratuitous ARP for {ip} from {mac}"),
        LIMIT,
        || {
            let from_mac = format!("{mac} > ");
            !captured_after(file, skip, &[&from_mac, "ff:ff:ff:ff:ff:ff,", &request]).is_empty()
                && !captured_after(file, skip, &[&from_mac, &reply]).is_empty()
        },
    );
}

/// Opens a TCP connection from the client namespace; the thread then waits for the
/// connection's fate: its read ends with the error kind (or the bytes read, if any).
fn connect_client(
    client_ns: &str,
    server: SocketAddr,
) -> (
    SocketAddr,
    std::thread::JoinHandle<Result<usize, std::io::ErrorKind>>,
) {
    let client_ns = client_ns.to_string();
    let (connected_tx, connected_rx) = mpsc::channel();
    let reader = spawn_named("netns-client", move || {
        enter_netns(&client_ns);
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(10)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        connected_tx.send(stream.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        stream.read(&mut buf).map_err(|e| e.kind())
    });
    (connected_rx.recv_timeout(LIMIT).unwrap(), reader)
}

/// `CTDB_NETNS_TCP_CLIENT="<socket> <client> <server>"` turns [`tcp_client_registrar`]
/// into an smbd stand-in.
const REGISTRAR_ENV: &str = "CTDB_NETNS_TCP_CLIENT";

/// A process that registered a connection with TCP_CLIENT and stays connected to the
/// daemon (a daemon forgets a client's connections when the client goes). It is a separate
/// process because a daemon that releases the address SIGKILLs the registering client.
#[derive(Debug)]
struct TcpClientRegistrar(Child);

impl TcpClientRegistrar {
    fn start(socket: &Path, client: SocketAddr, server: SocketAddr) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["netns::tcp_client_registrar", "--exact", "--nocapture"])
            .env(
                REGISTRAR_ENV,
                format!("{} {client} {server}", socket.display()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Owned by the guard at once, so that a failed registration still reaps it.
        let mut registrar = TcpClientRegistrar(child);
        let mut stdout = std::io::BufReader::new(registrar.0.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
            assert!(n > 0, "the registrar exited without registering");
            // The test harness may print its own words before ours on the same line.
            if let Some((_, status)) = line.trim().split_once("TCP_CLIENT status ") {
                assert_eq!(status, "0", "TCP_CLIENT failed");
                return registrar;
            }
        }
    }
}

impl Drop for TcpClientRegistrar {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test by itself: with [`REGISTRAR_ENV`] set it connects to a daemon, registers a
/// TCP connection with TCP_CLIENT as smbd does, reports the status, and stays connected
/// until its stdin closes. Without the variable it does nothing.
#[test]
fn tcp_client_registrar() {
    use ctdb::client::Client;
    use ctdb::protocol::basic::Marshal;
    use ctdb::protocol::header::CURRENT_NODE;
    use ctdb::protocol::opcode::ControlOpcode;
    use ctdb::protocol::types::Connection;
    use ctdb::protocol::SockAddr;

    let Ok(spec) = std::env::var(REGISTRAR_ENV) else {
        return;
    };
    let words: Vec<&str> = spec.split(' ').collect();
    let [socket, client, server] = words[..] else {
        panic!("bad {REGISTRAR_ENV}: {spec}");
    };
    let address = |text: &str| {
        let a: SocketAddr = text.parse().unwrap();
        SockAddr::new(a.ip(), a.port())
    };
    let connection = Connection {
        src: address(client),
        dst: address(server),
    };
    let mut daemon = Client::connect(Path::new(socket)).unwrap();
    let reply = daemon
        .control(
            CURRENT_NODE,
            ControlOpcode::TcpClient,
            0,
            0,
            connection.to_bytes(),
            Duration::from_secs(10),
        )
        .unwrap();
    println!("TCP_CLIENT status {}", reply.status);
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

fn failover_on_real_interfaces(flavour: Flavour) {
    if let Some(why) = unsupported() {
        eprintln!("netns test skipped: {why}");
        return;
    }
    let mut lab = Lab::new(flavour, u8::from(flavour == Flavour::Stock));
    lab.configure();
    for pnn in 0..NODES {
        lab.start(pnn);
    }
    let all: Vec<u32> = (0..NODES).collect();
    wait_for("all nodes OK", LIMIT, || {
        lab.ctdb(0, &["nodestatus", "all"]).status.success()
    });

    // (1) Each public address is on exactly one node's interface, where CTDB says it is.
    lab.step("all nodes OK");
    let balanced = |p: &BTreeMap<IpAddr, u32>| (0..NODES).all(|n| p.values().any(|&h| h == n));
    let placed = lab.wait_placed("one address on each node", &all, balanced);
    // 10.interface's monitor event reported the link of the one interface up (`setifacelink`).
    for pnn in 0..NODES {
        let ifaces = lab.ctdb_ok(pnn, &["-X", "ifaces"]);
        assert!(
            ifaces.lines().any(|l| l.starts_with("|eth0|1|")),
            "{ifaces}"
        );
    }

    let capture = lab.start_capture(&["arp or tcp or icmp6"]);

    // (3) Two client connections to an address of `victim`, known to the whole cluster as
    // tickles, are reset by the new host once the address has moved there. One is
    // registered as smbd does it (TCP_CLIENT on the victim, which tells every node at once),
    // the other with `ctdb addtickle` (the victim's periodic tickle update spreads it).
    let (&served, &victim) = placed.iter().next().unwrap();
    let victim_ns = lab.node_ns(victim);
    let server_addr = SocketAddr::from((served, SERVICE_PORT));
    let (listening_tx, listening_rx) = mpsc::channel();
    let server = spawn_named("netns-server", move || {
        enter_netns(&victim_ns);
        let listener = TcpListener::bind(server_addr).unwrap();
        listening_tx.send(()).unwrap();
        // Held until the end of the test: the victim's kernel never closes the connections.
        (0..2)
            .map(|_| listener.accept().unwrap())
            .collect::<Vec<_>>()
    });
    listening_rx.recv_timeout(LIMIT).unwrap();
    let (smbd_like, smbd_like_reset) = connect_client(&lab.client_ns(), server_addr);
    let (added, added_reset) = connect_client(&lab.client_ns(), server_addr);
    let registrar = TcpClientRegistrar::start(&lab.socket(victim), smbd_like, server_addr);
    lab.ctdb_ok(
        victim,
        &["addtickle", &added.to_string(), &server_addr.to_string()],
    );
    for pnn in 0..NODES {
        wait_for(&format!("node {pnn} to know both tickles"), LIMIT, || {
            let out = lab.ctdb(pnn, &["-X", "gettickles", &served.to_string()]);
            let text = String::from_utf8_lossy(&out.stdout);
            [smbd_like, added]
                .iter()
                .all(|c| text.lines().any(|l| l.contains(&format!("|{}|", c.port()))))
        });
    }

    // The victim dies as a machine would: daemon gone, link down. Its kernel keeps its
    // addresses (nobody ran releaseip); the survivors take them over.
    lab.step("tickles known everywhere; killing the victim");
    let seen = captured_lines(&capture);
    lab.kill(victim);
    drop(registrar);
    must(
        "ip",
        &["-n", &lab.node_ns(victim), "link", "set", "eth0", "down"],
    );
    let survivors: Vec<u32> = all.iter().copied().filter(|&n| n != victim).collect();
    let placed = lab.wait_placed("the victim's addresses on survivors", &survivors, |_| true);
    let heir = placed[&served];
    assert_ne!(heir, victim);
    // (2) The heir announces the address: a gratuitous ARP from its MAC.
    wait_garp(&capture, seen, served, &lab.node_mac(heir));
    lab.step("gratuitous ARP from the heir seen");
    let heir_mac = lab.node_mac(heir);
    for (client_addr, reset) in [(smbd_like, smbd_like_reset), (added, added_reset)] {
        assert_eq!(
            reset.join().unwrap(),
            Err(std::io::ErrorKind::ConnectionReset),
            "the read of client {client_addr} should fail with a reset"
        );
        let from_service = format!(
            "{served}.{SERVICE_PORT} > {}.{}:",
            client_addr.ip(),
            client_addr.port()
        );
        assert!(
            !captured(&capture, &[&heir_mac, &from_service, "win 1234"]).is_empty(),
            "no tickle ACK from the heir to {client_addr}"
        );
        assert!(
            !captured(&capture, &[&heir_mac, &from_service, "Flags [R"]).is_empty(),
            "no RST from the heir's kernel to {client_addr}"
        );
    }
    assert!(
        lab.kernel_addresses(victim).contains(&served),
        "a killed daemon cannot release its addresses"
    );

    // Restarted, the victim's `init` event drops its stale addresses before it takes any:
    // afterwards every address is on exactly one kernel again, where CTDB says it is.
    must(
        "ip",
        &["-n", &lab.node_ns(victim), "link", "set", "eth0", "up"],
    );
    lab.step("clients reset; restarting the victim");
    lab.start(victim);
    wait_for("all nodes OK again", LIMIT, || {
        lab.ctdb(0, &["nodestatus", "all"]).status.success()
    });
    let placed = lab.wait_placed("addresses rebalanced after the restart", &all, balanced);
    drop(server.join());

    // `ctdb moveip` (last: it pauses takeover runs for twice the CLI's time limit) moves an
    // address between kernels, and the new host announces it.
    let (&moved, &from) = placed.iter().next().unwrap();
    let to = (from + 1) % NODES;
    let seen = captured_lines(&capture);
    lab.ctdb_ok(0, &["moveip", &moved.to_string(), &to.to_string()]);
    let placed = lab.wait_placed("the moved address on its new host", &all, |p| {
        p.get(&moved) == Some(&to)
    });
    assert!(!lab.kernel_addresses(from).contains(&moved));
    wait_garp(&capture, seen, moved, &lab.node_mac(to));
    lab.step("gratuitous ARP after moveip seen");

    // The IPv6 address moves the same way; its new host sends an unsolicited neighbour
    // advertisement to all nodes.
    let moved6 = lab.public_ips()[NODES as usize];
    let from6 = placed[&moved6];
    let to6 = (from6 + 1) % NODES;
    let seen = captured_lines(&capture);
    lab.ctdb_ok(0, &["moveip", &moved6.to_string(), &to6.to_string()]);
    lab.wait_placed("the IPv6 address on its new host", &all, |p| {
        p.get(&moved6) == Some(&to6)
    });
    assert!(!lab.kernel_addresses(from6).contains(&moved6));
    let to_all_nodes = format!("{} > 33:33:00:00:00:01", lab.node_mac(to6));
    let advert = format!("neighbor advertisement, tgt is {moved6},");
    wait_for("an unsolicited neighbour advertisement", LIMIT, || {
        !captured_after(&capture, seen, &[&to_all_nodes, &advert]).is_empty()
    });
    lab.step("neighbour advertisement after moveip seen");

    let service = format!(".{SERVICE_PORT} ");
    for words in [&["ARP"], &["neighbor advertisement"], &[service.as_str()]] {
        for line in captured(&capture, words) {
            eprintln!("{line}");
        }
    }
}

#[test]
fn ours_fail_over_real_interfaces() {
    failover_on_real_interfaces(Flavour::Ours);
}

#[test]
fn stock_fails_over_real_interfaces() {
    failover_on_real_interfaces(Flavour::Stock);
}

/// The frames `takeover::system` builds, as tcpdump decodes them on the far end of a real
/// Ethernet link: a gratuitous ARP request and reply, an IPv6 unsolicited neighbour
/// advertisement, and IPv4 and IPv6 tickle ACKs with correct checksums. The sending thread
/// only enters the node's network namespace (its `/sys` still shows the host's), which is
/// also how a daemon started with `unshare -n` would see the system.
#[test]
fn announcements_and_tickles_on_the_wire() {
    use ctdb::protocol::SockAddr;
    use ctdb::server::takeover::system;

    if let Some(why) = unsupported() {
        eprintln!("netns test skipped: {why}");
        return;
    }
    let mut lab = Lab::new(Flavour::Ours, 2);
    // The client has IPv6 switched off; the tickle needs it on both ends.
    for (ns, host) in [(lab.node_ns(0), 1), (lab.client_ns(), 200)] {
        must(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.eth0.disable_ipv6=0",
            ],
        );
        must(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/64", lab.v6(host)),
                "dev",
                "eth0",
                "nodad",
            ],
        );
    }
    let capture = lab.start_capture(&["-vv", "arp or tcp or icmp6"]);
    let public4 = lab.public_ips()[0];
    let public6 = lab.v6(0x65);
    let client4 = lab.client_ip();
    let client6 = lab.v6(200);
    let sender = lab.node_ns(0);
    let sent = spawn_named("netns-frames", move || {
        enter_netns(&sender);
        assert!(system::iface_exists("eth0"));
        system::send_arp(&SockAddr::new(public4, 0), "eth0")?;
        system::send_arp(&SockAddr::new(public6.into(), 0), "eth0")?;
        system::send_tickle_ack(
            &SockAddr::new(public4, SERVICE_PORT),
            &SockAddr::new(client4.into(), 5000),
        )?;
        system::send_tickle_ack(
            &SockAddr::new(public6.into(), SERVICE_PORT),
            &SockAddr::new(client6.into(), 5000),
        )
    })
    .join()
    .unwrap();
    assert_eq!(sent, Ok(()));

    let mac = lab.node_mac(0);
    let tickle4 = format!("{public4}.{SERVICE_PORT} > {client4}.5000: Flags [.], cksum");
    let tickle6 = format!("{public6}.{SERVICE_PORT} > {client6}.5000: Flags [.], cksum");
    let mut text = String::new();
    wait_for("all four frames", LIMIT, || {
        text = fs::read_to_string(&capture).unwrap_or_default();
        text.contains(&tickle4) && text.contains(&tickle6)
    });
    eprintln!("{text}");
    let broadcast = format!("{mac} > ff:ff:ff:ff:ff:ff, ethertype ARP");
    assert!(!captured(
        &capture,
        &[
            &broadcast,
            &format!("Request who-has {public4} tell {public4}")
        ]
    )
    .is_empty());
    assert!(!captured(
        &capture,
        &[&broadcast, &format!("Reply {public4} is-at {mac}")]
    )
    .is_empty());
    assert!(text.contains(&format!(
        "neighbor advertisement, length 32, tgt is {public6}"
    )));
    assert!(text.contains(&format!("{mac} > 33:33:00:00:00:01, ethertype IPv6")));
    for tickle in [&tickle4, &tickle6] {
        let line = text.lines().find(|l| l.contains(tickle.as_str())).unwrap();
        assert!(line.contains("(correct)"), "bad checksum: {line}");
        assert!(line.contains("win 1234"), "not a tickle: {line}");
    }
    assert!(
        !text.contains("bad cksum") && !text.contains("incorrect"),
        "{text}"
    );
}
