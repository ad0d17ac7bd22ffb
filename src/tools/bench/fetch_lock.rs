//! Fetch-lock workloads: what smbd does to volatile records (`client::db`).
//!
//! * **Ring**: one hot key handed round the nodes. A client on each node in turn fetch-locks
//!   the key (which migrates the record to its node), increments the counter in it and
//!   releases it. Every turn is one migration; the figure is migrations per second. The ring
//!   runs in one process: each node's database is a different file, so one process may hold
//!   a handle on each.
//! * **Contended**: several worker processes per node (fcntl chain locks belong to the
//!   process, so a node's contenders must be separate processes, as smbd's are) each
//!   increment the same counter, `count` times or for a number of seconds. The figures are lock acquisitions per second
//!   over all workers and the latency of one fetch-lock (from asking to holding the lock).
//!   The counter must end at its start value plus every increment: a lost update fails the
//!   run.
//!
//! For both, the daemons' lock helper children (`ctdb_lock_helper`, stock's way to wait for a
//! chain a client holds) are counted from `/proc` while the workload runs.

use super::output::KeyValues;
use super::procfs;
use super::stats::{percentile_sorted, LatencySummary};
use crate::client::db::{DbError, DbHandle};
use crate::client::Client;
use crate::common::clock::MonotonicClock;
use crate::protocol::opcode::ControlOpcode;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The database the workloads use unless told otherwise.
pub const DEFAULT_DB: &str = "fetch_lock_bench.tdb";
/// The hot key.
pub const DEFAULT_KEY: &str = "hot";
/// `comm` of stock's lock helper as `/proc` shows it (truncated to 15 characters).
const LOCK_HELPER_COMM: &str = "ctdb_lock_helpe";

/// The counter stored in a record: decimal text, empty meaning 0 (readable with `ctdb catdb`).
pub fn parse_counter(data: &[u8]) -> Result<u64, String> {
    if data.is_empty() {
        return Ok(0);
    }
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.trim_end_matches('\0').parse().ok())
        .ok_or_else(|| format!("record holds {data:?}, not a counter"))
}

pub fn format_counter(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Fetch-locks `key`, adds one to its counter and releases it. Returns the value stored,
/// the migration calls needed and the time to get the lock.
pub fn increment(
    db: &DbHandle,
    client: &mut Client,
    key: &[u8],
    timeout: Duration,
    clock: &MonotonicClock,
) -> Result<(u64, u32, Duration), String> {
    let started = clock.now();
    let mut lock = db
        .fetch_lock_timeout(client, key, timeout)
        .map_err(|e| format!("fetch_lock on node {}: {e}", db.pnn()))?;
    let waited = clock.now().saturating_since(started);
    let value = parse_counter(lock.data())? + 1;
    lock.store(&format_counter(value))
        .map_err(|e| format!("store on node {}: {e}", db.pnn()))?;
    Ok((value, lock.migrations(), waited))
}

/// Reads the counter through a fetch-lock (which migrates the record to this node).
pub fn read_counter(
    db: &DbHandle,
    client: &mut Client,
    key: &[u8],
    timeout: Duration,
) -> Result<u64, String> {
    let lock = db
        .fetch_lock_timeout(client, key, timeout)
        .map_err(|e: DbError| format!("fetch_lock on node {}: {e}", db.pnn()))?;
    parse_counter(lock.data())
}

/// Counts lock helper processes whose parent is one of the daemons, by polling `/proc` from
/// a thread until stopped.
#[derive(Debug)]
pub struct HelperWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, usize)>>,
}

impl HelperWatch {
    pub fn start(daemons: Vec<i32>) -> HelperWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        #[allow(clippy::disallowed_methods)] // The load tool, not the daemon: a sampler thread.
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut most = 0;
            while !flag.load(Ordering::Relaxed) {
                let now = lock_helpers_of(&daemons);
                most = most.max(now.len());
                seen.extend(now);
                std::thread::sleep(Duration::from_millis(2));
            }
            (seen.len(), most)
        });
        HelperWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// (distinct helpers seen, most alive at once).
    pub fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0))
    }
}

/// Pids of live lock helpers that are children of `daemons`.
pub fn lock_helpers_of(daemons: &[i32]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, ppid)) = comm_and_ppid(&stat) {
            if comm == LOCK_HELPER_COMM && daemons.contains(&ppid) {
                found.push(pid);
            }
        }
    }
    found
}

/// The command name and parent pid from a `/proc/<pid>/stat` line.
pub fn comm_and_ppid(stat: &str) -> Option<(&str, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    Some((comm, rest.next()?.parse().ok()?))
}

fn daemon_pid(client: &mut Client) -> Result<i32, String> {
    client
        .control_status(crate::protocol::header::CURRENT_NODE, ControlOpcode::GetPid)
        .map_err(|e| e.to_string())
}

/// One node's end of a workload: its client connection and database handle.
struct Member {
    client: Client,
    db: DbHandle,
}

fn attach_all(sockets: &[PathBuf], db_name: &str) -> Result<(Vec<Member>, Vec<i32>), String> {
    let mut members = Vec::new();
    let mut pids = Vec::new();
    for socket in sockets {
        let mut client =
            Client::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
        pids.push(daemon_pid(&mut client)?);
        let db = DbHandle::attach(&mut client, db_name)
            .map_err(|e| format!("attach {db_name} via {}: {e}", socket.display()))?;
        members.push(Member { client, db });
    }
    Ok((members, pids))
}

#[derive(Debug, Clone)]
pub struct RingOptions {
    /// One socket per node, in ring order.
    pub sockets: Vec<PathBuf>,
    pub db: String,
    pub key: Vec<u8>,
    pub seconds: f64,
    /// Per fetch-lock.
    pub timeout: Duration,
}

/// The ring: returns the key=value results; fails if the counter ever goes backwards.
pub fn ring(options: &RingOptions) -> Result<KeyValues, String> {
    if options.sockets.is_empty() {
        return Err("the ring needs at least one node".into());
    }
    let (mut members, pids) = attach_all(&options.sockets, &options.db)?;
    let clock = MonotonicClock::new();
    // Warm-up turn on every node: attach-time recoveries are over, the record exists.
    let mut last = 0;
    for m in &mut members {
        last = increment(&m.db, &mut m.client, &options.key, options.timeout, &clock)?.0;
    }
    let cpu_before = procfs::sample(&pids).cpu_ns;
    let watch = HelperWatch::start(pids.clone());
    let started = clock.now();
    let window = Duration::from_secs_f64(options.seconds.max(0.0));
    let mut turns = 0u64;
    let mut calls = 0u64;
    let mut samples = Vec::new();
    'outer: loop {
        for m in &mut members {
            let (value, migrations, waited) =
                increment(&m.db, &mut m.client, &options.key, options.timeout, &clock)?;
            if value != last + 1 {
                let _ = watch.finish();
                return Err(format!(
                    "counter went from {last} to {value} on node {}",
                    m.db.pnn()
                ));
            }
            last = value;
            turns += 1;
            calls += u64::from(migrations);
            samples.push(waited.as_secs_f64() * 1e6);
            if clock.now().saturating_since(started) >= window {
                break 'outer;
            }
        }
    }
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    let cpu_ns = procfs::sample(&pids).cpu_ns.saturating_sub(cpu_before);
    let (helpers, helpers_max) = watch.finish();
    let mut kv = KeyValues::new();
    kv.count("nodes", members.len() as u64)
        .count("turns", turns)
        .count("migration_calls", calls)
        .count("final_value", last)
        .number("elapsed_s", elapsed);
    if elapsed > 0.0 {
        kv.number("migrations_per_s", turns as f64 / elapsed);
    }
    if let Some(summary) = LatencySummary::from_samples(&mut samples) {
        for (key, value) in summary.pairs() {
            kv.number(key, value);
        }
    }
    daemon_cpu(&mut kv, cpu_ns, elapsed, turns);
    kv.count("lock_helpers", helpers as u64)
        .count("lock_helpers_max", helpers_max as u64);
    Ok(kv)
}

/// The daemons' CPU (their whole process trees, lock helpers included) over the window: as
/// a percentage of one core and per migration.
fn daemon_cpu(kv: &mut KeyValues, cpu_ns: u64, elapsed: f64, migrations: u64) {
    if elapsed > 0.0 {
        kv.number("daemon_cpu_pct", cpu_ns as f64 / 1e7 / elapsed);
    }
    if migrations > 0 {
        kv.number(
            "daemon_cpu_per_migration_us",
            cpu_ns as f64 / 1e3 / migrations as f64,
        );
    }
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub socket: PathBuf,
    pub db: String,
    pub key: Vec<u8>,
    /// Most increments; 0 for no limit (then `seconds` must be set).
    pub count: usize,
    /// Stop after this long (0: run until `count`).
    pub seconds: f64,
    pub timeout: Duration,
    /// Print `ready` once attached and wait for a byte on stdin before starting.
    pub wait_for_go: bool,
}

/// One contending worker: `count` increments; prints its own results, latency samples
/// included, for [`contend`] to merge.
pub fn worker(options: &WorkerOptions) -> Result<KeyValues, String> {
    let mut client = Client::connect(&options.socket)
        .map_err(|e| format!("{}: {e}", options.socket.display()))?;
    let db = DbHandle::attach(&mut client, &options.db).map_err(|e| e.to_string())?;
    if options.wait_for_go {
        // Start line: tell the parent we are attached, then wait for its byte on stdin.
        let mut stdout = std::io::stdout();
        stdout
            .write_all(b"ready\n")
            .and_then(|()| stdout.flush())
            .map_err(|e| e.to_string())?;
        let mut go = [0u8; 1];
        std::io::stdin()
            .read_exact(&mut go)
            .map_err(|e| format!("waiting for the start: {e}"))?;
    }
    let clock = MonotonicClock::new();
    let mut samples = Vec::with_capacity(options.count);
    let mut remote = Vec::new();
    let mut calls = 0u64;
    let started = clock.now();
    let window = Duration::from_secs_f64(options.seconds.max(0.0));
    while options.count == 0 || samples.len() < options.count {
        if !window.is_zero() && clock.now().saturating_since(started) >= window {
            break;
        }
        let (_, migrations, waited) =
            increment(&db, &mut client, &options.key, options.timeout, &clock)?;
        calls += u64::from(migrations);
        let us = waited.as_secs_f64() * 1e6;
        samples.push(us);
        if migrations > 0 {
            remote.push(us);
        }
    }
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    let mut kv = KeyValues::new();
    kv.count("count", samples.len() as u64)
        .count("migration_calls", calls)
        .number("elapsed_s", elapsed);
    let list = |v: &[f64]| -> String {
        v.iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    kv.label("samples_us", &list(&samples))
        .label("remote_us", &list(&remote));
    Ok(kv)
}

#[derive(Debug, Clone)]
pub struct ContendOptions {
    pub sockets: Vec<PathBuf>,
    pub db: String,
    pub key: Vec<u8>,
    pub per_node: usize,
    /// Increments per worker (0: no limit).
    pub count: usize,
    /// How long each worker runs (0: until `count`).
    pub seconds: f64,
    pub timeout: Duration,
    /// The `ctdb-bench` binary that runs `fetch-lock-worker`.
    pub exe: PathBuf,
}

/// Contended fetch-lock: starts `per_node` workers on every node, waits for all, merges
/// their samples and checks the counter.
pub fn contend(options: &ContendOptions) -> Result<KeyValues, String> {
    let (mut members, pids) = attach_all(&options.sockets, &options.db)?;
    let first = members.first_mut().ok_or("no nodes given")?;
    let start_value = read_counter(&first.db, &mut first.client, &options.key, options.timeout)?;
    let key = String::from_utf8_lossy(&options.key).into_owned();
    let mut children = Vec::new();
    for socket in &options.sockets {
        for _ in 0..options.per_node {
            let child = Command::new(&options.exe)
                .arg("fetch-lock-worker")
                .args(["--socket", &socket.display().to_string()])
                .args(["--db", &options.db, "--key", &key])
                .args(["--count", &options.count.to_string()])
                .args(["--seconds", &options.seconds.to_string()])
                .args(["--timeout", &options.timeout.as_secs_f64().to_string()])
                .arg("--wait-for-go")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("{}: {e}", options.exe.display()))?;
            children.push(child);
        }
    }
    // Everyone attaches first, then all start at once.
    let mut readers = Vec::new();
    for child in &mut children {
        let mut reader = BufReader::new(child.stdout.take().ok_or("worker without stdout")?);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        readers.push(reader);
    }
    let cpu_before = procfs::sample(&pids).cpu_ns;
    let watch = HelperWatch::start(pids.clone());
    let clock = MonotonicClock::new();
    let started = clock.now();
    for child in &mut children {
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = stdin.write_all(b"g").and_then(|()| stdin.flush());
        }
    }
    let mut samples = Vec::new();
    let mut remote = Vec::new();
    let mut calls = 0u64;
    let mut failures = Vec::new();
    for (mut child, mut reader) in children.into_iter().zip(readers) {
        let mut out = String::new();
        let mut err = String::new();
        let _ = reader.read_to_string(&mut out);
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            failures.push(err.trim().to_string());
            continue;
        }
        for line in out.lines() {
            match line.split_once('=') {
                Some(("samples_us", list)) => samples.extend(parse_list(list)),
                Some(("remote_us", list)) => remote.extend(parse_list(list)),
                Some(("migration_calls", n)) => calls += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    let cpu_ns = procfs::sample(&pids).cpu_ns.saturating_sub(cpu_before);
    let (helpers, helpers_max) = watch.finish();
    if let Some(first_failure) = failures.first() {
        return Err(format!(
            "{} of the workers failed, first: {first_failure}",
            failures.len()
        ));
    }
    let first = members.first_mut().ok_or("no nodes given")?;
    let final_value = read_counter(&first.db, &mut first.client, &options.key, options.timeout)?;
    let total = samples.len() as u64;
    let mut kv = KeyValues::new();
    kv.count("workers", (options.sockets.len() * options.per_node) as u64)
        .count("locks", samples.len() as u64)
        .count("migration_calls", calls)
        .count("start_value", start_value)
        .count("final_value", final_value)
        .number("elapsed_s", elapsed);
    if final_value != start_value + total {
        return Err(format!(
            "lost update: counter went from {start_value} to {final_value} after {total} increments"
        ));
    }
    if elapsed > 0.0 {
        kv.number("locks_per_s", samples.len() as f64 / elapsed)
            .number("migrations_per_s", calls as f64 / elapsed);
    }
    if let Some(summary) = LatencySummary::from_samples(&mut samples) {
        for (key, value) in summary.pairs() {
            kv.number(key, value);
        }
        if let Some(p999) = percentile_sorted(&samples, 99.9) {
            kv.number("p999_us", p999);
        }
    }
    // Fetch-locks that had to bring the record from another node.
    if let Some(summary) = LatencySummary::from_samples(&mut remote) {
        kv.count("remote_locks", remote.len() as u64)
            .number("remote_p50_us", summary.p50_us)
            .number("remote_p99_us", summary.p99_us)
            .number("remote_max_us", summary.max_us);
    }
    daemon_cpu(&mut kv, cpu_ns, elapsed, calls);
    kv.count("lock_helpers", helpers as u64)
        .count("lock_helpers_max", helpers_max as u64);
    Ok(kv)
}

fn parse_list(list: &str) -> impl Iterator<Item = f64> + '_ {
    list.split(',').filter_map(|s| s.parse::<f64>().ok())
}

/// The unix socket of node `pnn` of a `scripts/local_cluster.sh` cluster.
pub fn cluster_socket(dir: &Path, pnn: usize) -> PathBuf {
    dir.join(format!("node.{pnn}")).join("run/ctdbd.socket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip() {
        for v in [0u64, 1, 9, 10, 12345, u64::MAX] {
            assert_eq!(parse_counter(&format_counter(v)).unwrap(), v);
        }
        assert_eq!(parse_counter(b"").unwrap(), 0);
        assert!(parse_counter(b"x1").is_err());
        assert!(parse_counter(&[0xff]).is_err());
    }

    #[test]
    fn stat_lines_give_comm_and_parent() {
        let line = "4242 (ctdb_lock_helpe) S 17 4242 17 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0";
        assert_eq!(comm_and_ppid(line), Some(("ctdb_lock_helpe", 17)));
        let odd = "7 (a) b (c)) R 3 7";
        assert_eq!(comm_and_ppid(odd), Some(("a) b (c)", 3)));
        assert_eq!(comm_and_ppid("garbage"), None);
    }
}
