//! Local clusters for integration tests: N daemons (stock or ours) on 127.A.B.x, one
//! `CTDB_BASE` each, driven through `scripts/local_cluster.sh` and the stock `ctdb` CLI.
//!
//! Every cluster lives in its own directory and address range, so tests run in parallel. The
//! guard tears the cluster down (by recorded pid, never by name) when it goes out of scope,
//! even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const STOCK_CTDBD: &str = "/usr/sbin/ctdbd";
pub const STOCK_CTDB: &str = "/usr/bin/ctdb";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("scripts/local_cluster.sh")
}

/// Our binaries, built by cargo for this test run.
pub fn our_ctdbd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctdbd"))
}

pub fn our_eventd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctdb-eventd"))
}

pub fn our_takeover_helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctdb_takeover_helper"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Stock,
    Ours,
}

#[derive(Debug)]
pub struct LocalCluster {
    pub dir: PathBuf,
    pub prefix: String,
    pub nodes: u32,
    flavour: Flavour,
}

impl LocalCluster {
    /// Writes the configuration of an `nodes`-node cluster on `prefix` (like `127.0.71`).
    pub fn setup(name: &str, flavour: Flavour, nodes: u32, prefix: &str, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("ctdb-rs-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ctdbd = match flavour {
            Flavour::Stock => PathBuf::from(STOCK_CTDBD),
            Flavour::Ours => our_ctdbd(),
        };
        let cluster = LocalCluster {
            dir,
            prefix: prefix.to_string(),
            nodes,
            flavour,
        };
        let mut args: Vec<String> = vec![
            "setup".into(),
            "-n".into(),
            nodes.to_string(),
            "-a".into(),
            prefix.into(),
            "--ctdbd".into(),
            ctdbd.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = cluster.run_script(&args);
        assert!(
            out.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn run_script(&self, args: &[String]) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg(&self.dir).args(args);
        if self.flavour == Flavour::Ours {
            cmd.env("CTDB_EVENTD", our_eventd())
                .env(
                    "CTDB_RECOVERY_HELPER",
                    env!("CARGO_BIN_EXE_ctdb_recovery_helper"),
                )
                .env("CTDB_TAKEOVER_HELPER", our_takeover_helper())
                .env(
                    "CTDB_CLUSTER_MUTEX_HELPER",
                    env!("CARGO_BIN_EXE_ctdb_mutex_fcntl_helper"),
                );
        }
        cmd.output().unwrap()
    }

    pub fn start(&self) {
        let out = self.run_script(&["start".into()]);
        assert!(
            out.status.success(),
            "start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_node(&self, pnn: u32) {
        let out = self.run_script(&["start".into(), pnn.to_string()]);
        assert!(
            out.status.success(),
            "start {pnn} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn node_base(&self, pnn: u32) -> PathBuf {
        self.dir.join(format!("node.{pnn}"))
    }

    /// The daemon pid recorded for a node, if it is running.
    pub fn pid(&self, pnn: u32) -> Option<i32> {
        let text = std::fs::read_to_string(self.node_base(pnn).join("daemon.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        (nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()).then_some(pid)
    }

    pub fn signal(&self, pnn: u32, signal: nix::sys::signal::Signal) {
        let pid = self.pid(pnn).expect("node is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }

    /// Runs the stock `ctdb` CLI against node `pnn`.
    pub fn ctdb(&self, pnn: u32, args: &[&str]) -> Output {
        let base = self.node_base(pnn);
        Command::new(STOCK_CTDB)
            .args(args)
            .env("CTDB_TEST_MODE", "yes")
            .env("CTDB_BASE", &base)
            .env("CTDB_SOCKET", base.join("run/ctdbd.socket"))
            .output()
            .unwrap()
    }

    pub fn ctdb_stdout(&self, pnn: u32, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ctdb(pnn, args).stdout).into_owned()
    }

    /// Runs the stock `ctdb` CLI against node `pnn` and returns its standard output; a failed
    /// command fails the test.
    pub fn ctdb_ok(&self, pnn: u32, args: &[&str]) -> String {
        let out = self.ctdb(pnn, args);
        assert!(
            out.status.success(),
            "ctdb {args:?} on node {pnn} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every node reports recovery mode NORMAL (after an attach or a recovery).
    pub fn wait_recovered(&self, limit: Duration) {
        self.wait_for("recovery mode NORMAL everywhere", limit, || {
            (0..self.nodes).all(|n| {
                self.ctdb_stdout(n, &["status"])
                    .contains("Recovery mode:NORMAL")
            })
        });
    }

    /// Makes nodes `pnns` of a not yet started cluster run ctdb-rs with our eventd, recovery
    /// helper and cluster-mutex helper (a mixed cluster when the rest run stock).
    pub fn run_ours_on(&self, pnns: &[u32]) {
        let env = format!(
            "NODE_CTDBD={}\nexport CTDB_EVENTD={}\nexport CTDB_RECOVERY_HELPER={}\nexport CTDB_CLUSTER_MUTEX_HELPER={}\n",
            our_ctdbd().display(),
            our_eventd().display(),
            env!("CARGO_BIN_EXE_ctdb_recovery_helper"),
            env!("CARGO_BIN_EXE_ctdb_mutex_fcntl_helper"),
        );
        for &pnn in pnns {
            std::fs::write(self.node_base(pnn).join("node.env"), &env).unwrap();
        }
    }

    /// The flags columns of `ctdb -X nodestatus all` as seen from `pnn`: one row per node,
    /// `(disconnected, unknown, banned, disabled, unhealthy, stopped, inactive)`.
    pub fn node_flags(&self, pnn: u32) -> Vec<Vec<bool>> {
        self.ctdb_stdout(pnn, &["-X", "nodestatus", "all"])
            .lines()
            .skip(1)
            .map(|l| l.split('|').skip(3).take(7).map(|f| f == "1").collect())
            .collect()
    }

    /// Waits until `pred` holds, polling every 50 ms; returns how long it took.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut() -> bool,
    ) -> Duration {
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
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running node sees every other running node connected.
    pub fn wait_connected(&self, limit: Duration) -> Duration {
        let running: Vec<u32> = (0..self.nodes).filter(|&n| self.pid(n).is_some()).collect();
        self.wait_for("all links up", limit, || {
            running.iter().all(|&n| {
                let rows = self.node_flags(n);
                rows.len() == self.nodes as usize
                    && running
                        .iter()
                        .all(|&m| rows[m as usize].first() == Some(&false))
            })
        })
    }

    /// Waits until every node reports every node OK (`ctdb nodestatus all` exits 0).
    pub fn wait_all_ok(&self, limit: Duration) -> Duration {
        self.wait_for("all nodes OK", limit, || {
            (0..self.nodes).all(|n| self.ctdb(n, &["nodestatus", "all"]).status.success())
        })
    }

    pub fn write_event_script(&self, pnn: u32, name: &str, body: &str) {
        let dir = self.node_base(pnn).join("events/legacy");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::env::var_os("CTDB_TEST_KEEP").is_none() {
            let _ = self.run_script(&["teardown".into()]);
        }
    }
}

/// Compares two CLI transcripts line by line. On a difference it saves both next to `dir`
/// (`ours.txt`, `stock.txt`) and fails naming the first differing line with a little
/// context, instead of printing two walls of text that CI logs cut short.
pub fn assert_same_transcript(dir: &Path, ours: &str, stock: &str) {
    let _ = std::fs::write(dir.join("ours.txt"), ours);
    let _ = std::fs::write(dir.join("stock.txt"), stock);
    if ours == stock {
        return;
    }
    let ours_lines: Vec<&str> = ours.lines().collect();
    let stock_lines: Vec<&str> = stock.lines().collect();
    let first = ours_lines
        .iter()
        .zip(&stock_lines)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| ours_lines.len().min(stock_lines.len()));
    let from = first.saturating_sub(6);
    let window =
        |lines: &[&str]| lines[from.min(lines.len())..(first + 6).min(lines.len())].join("\n");
    panic!(
        "transcripts differ at line {} (both kept in {} with CTDB_TEST_KEEP=1)\n--- ours ---\n{}\n--- stock ---\n{}",
        first + 1,
        dir.display(),
        window(&ours_lines),
        window(&stock_lines),
    );
}
