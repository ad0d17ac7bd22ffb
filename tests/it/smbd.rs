//! The real client: Samba's smbd with `clustering = yes` on two cluster nodes serving one
//! share from a shared directory, driven with `smbclient` and checked with `smbstatus`.
//!
//! Each node gets its own smbd (own state, lock, cache and private directories, its own
//! port on 127.0.0.1) talking to its node's ctdbd socket, exactly as two cluster hosts would.
//! Everything smbd shares between nodes (open files, share modes, sessions, byte-range
//! locks) lives in the clustered volatile databases, so the checks below only pass when
//! record migration, seqnum propagation and traverse work across the nodes.

use crate::cluster::{Flavour, LocalCluster};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

const SMBD: &str = "/usr/sbin/smbd";

/// One smbd serving `share` through node `pnn`'s ctdbd; stopped (whole process group) on drop.
struct Smbd {
    child: Child,
    conf: PathBuf,
    port: u16,
}

impl Smbd {
    fn start(cluster: &LocalCluster, pnn: u32, share: &Path, port: u16) -> Smbd {
        let base = cluster.dir().join(format!("smb.{pnn}"));
        for sub in ["lock", "state", "cache", "private", "pid", "ncalrpc", "log"] {
            std::fs::create_dir_all(base.join(sub)).unwrap();
        }
        let b = base.display();
        let conf = format!(
            "[global]\n\
             clustering = yes\n\
             ctdbd socket = {socket}\n\
             netbios name = CTDBRS\n\
             workgroup = WG\n\
             interfaces = lo\n\
             bind interfaces only = yes\n\
             smb ports = {port}\n\
             disable netbios = yes\n\
             lock directory = {b}/lock\n\
             state directory = {b}/state\n\
             cache directory = {b}/cache\n\
             private dir = {b}/private\n\
             pid directory = {b}/pid\n\
             ncalrpc dir = {b}/ncalrpc\n\
             log file = {b}/log/log.%m\n\
             log level = 1\n\
             server role = standalone server\n\
             map to guest = Bad User\n\
             guest account = nobody\n\
             server min protocol = SMB2\n\
             load printers = no\n\
             printing = bsd\n\
             printcap name = /dev/null\n\
             rpc_server:spoolss = disabled\n\
             [share]\n\
             path = {share}\n\
             read only = no\n\
             guest ok = yes\n\
             force user = root\n",
            socket = cluster.node_base(pnn).join("run/ctdbd.socket").display(),
            share = share.display(),
        );
        let conf_path = base.join("smb.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // -F keeps smbd in the foreground as our child; it still makes itself the leader of a
        // new process group, which is how its helpers are stopped with it.
        let child = Command::new(SMBD)
            .args(["-F", "-s"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smbd (Debian package samba) must be installed: make deps");
        let smbd = Smbd {
            child,
            conf: conf_path,
            port,
        };
        cluster.wait_for(
            &format!("smbd of node {pnn} to listen on {port}"),
            Duration::from_secs(60),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        smbd
    }

    fn smbclient(&self, commands: &str) -> String {
        let out = bounded("smbclient")
            .args(["-N", "//127.0.0.1/share", "-p"])
            .arg(self.port.to_string())
            .args(["-c", commands])
            .output()
            .expect("smbclient must be installed: make deps");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "smbclient -c '{commands}': {text}");
        text
    }

    /// An smbclient session that keeps `name` open until it is dropped.
    fn hold_open(&self, name: &str) -> HeldOpen {
        // smbclient's stdout is a pipe here: `stdbuf` makes it print the "fnum" line at once.
        let mut child = Command::new("stdbuf")
            .args(["-o0", "smbclient", "-N", "//127.0.0.1/share", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "open {name}").unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        #[allow(clippy::disallowed_methods)] // A reader thread bounds the wait for smbclient.
        std::thread::spawn(move || {
            let opened = BufReader::new(stdout)
                .lines()
                .any(|l| l.is_ok_and(|l| l.contains("fnum")));
            let _ = tx.send(opened);
        });
        let held = HeldOpen {
            child,
            stdin: Some(stdin),
        };
        let opened = rx.recv_timeout(Duration::from_secs(60)).unwrap_or(false);
        assert!(opened, "smbclient could not open {name}");
        held
    }

    fn smbstatus(&self, args: &[&str]) -> String {
        let out = bounded("smbstatus")
            .args(args)
            .arg("-s")
            .arg(&self.conf)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-self.child.id().cast_signed());
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// An interactive smbclient with an open file; closing its stdin ends the session.
struct HeldOpen {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for HeldOpen {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // smbclient ends at EOF; a kill covers one stuck in a failed test.
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client tool that cannot hang the test: it is killed after two minutes.
fn bounded(tool: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", tool]);
    cmd
}

fn random_file(path: &Path, seed: u64, len: usize) -> Vec<u8> {
    let mut prng = ctdb::testing::Prng::new(seed);
    let bytes: Vec<u8> = (0..len).map(|_| prng.u8()).collect();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// Both nodes see each other's files, share modes and opens.
fn serve_one_share_through_two_nodes(cluster: &LocalCluster, first_port: u16) {
    let share = cluster.dir().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let smbd: Vec<Smbd> = (0..2)
        .map(|pnn| Smbd::start(cluster, pnn, &share, first_port + pnn as u16))
        .collect();
    let scratch = cluster.dir().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    // Files written through one node are listed and read back intact through the other.
    for (from, to) in [(0usize, 1usize), (1, 0)] {
        let name = format!("from{from}.bin");
        let sent = random_file(&scratch.join(&name), 40 + from as u64, 300_000);
        smbd[from].smbclient(&format!("put {} {name}", scratch.join(&name).display()));
        let listing = smbd[to].smbclient("ls");
        assert!(
            listing.contains(&name),
            "{name} not listed via node {to}: {listing}"
        );
        let back = scratch.join(format!("{name}.back"));
        smbd[to].smbclient(&format!("get {name} {}", back.display()));
        assert!(
            std::fs::read(&back).unwrap() == sent,
            "{name} differs via node {to}"
        );
    }

    // A file held open through node 0 cannot be deleted through node 1.
    {
        let _open = smbd[0].hold_open("from0.bin");
        let out = bounded("smbclient")
            .args(["-N", "//127.0.0.1/share", "-p"])
            .arg(smbd[1].port.to_string())
            .args(["-c", "del from0.bin"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("NT_STATUS_SHARING_VIOLATION"),
            "delete through node 1 of a file open through node 0: {text}"
        );
        assert!(share.join("from0.bin").exists());
    }

    // smbstatus on either node lists the opens held through both.
    {
        let _a = smbd[0].hold_open("from0.bin");
        let _b = smbd[1].hold_open("from1.bin");
        for (pnn, s) in smbd.iter().enumerate() {
            let status = s.smbstatus(&["-L"]);
            for (holder, name) in [(0, "from0.bin"), (1, "from1.bin")] {
                assert!(
                    status
                        .lines()
                        .any(|l| l.starts_with(&format!("{holder}:")) && l.contains(name)),
                    "smbstatus -L on node {pnn} does not list {name} open via node {holder}:\n{status}"
                );
            }
        }
    }

    // With the opens closed the delete goes through, and both nodes agree it is gone.
    cluster.wait_for("the delete through node 1", Duration::from_secs(30), || {
        bounded("smbclient")
            .args(["-N", "//127.0.0.1/share", "-p"])
            .arg(smbd[1].port.to_string())
            .args(["-c", "del from0.bin"])
            .output()
            .unwrap()
            .status
            .success()
    });
    assert!(!smbd[0].smbclient("ls").contains("from0.bin"));
}

#[test]
fn clustered_smbd_on_two_ctdb_rs_nodes() {
    let c = LocalCluster::setup("smbd-ours", Flavour::Ours, 2, "127.0.130", &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    serve_one_share_through_two_nodes(&c, 14450);
}

#[test]
fn clustered_smbd_on_a_mixed_pair() {
    // Node 0 runs stock ctdbd, node 1 ctdb-rs.
    let c = LocalCluster::setup("smbd-mixed", Flavour::Stock, 2, "127.0.131", &[]);
    c.run_ours_on(&[1]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    serve_one_share_through_two_nodes(&c, 14452);
}
