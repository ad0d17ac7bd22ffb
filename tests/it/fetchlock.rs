//! Fetch-lock from the client side (`ctdb::client::db`), as smbd does it: the client opens the
//! node's volatile TDB itself, takes the record's chain lock, and asks its daemon to migrate
//! the record when another node is the dmaster. Run against ctdb-rs, a mixed cluster and
//! pure stock (which shows the client itself is right).

use crate::cluster::{Flavour, LocalCluster};
use ctdb::client::db::DbHandle;
use ctdb::client::Client;
use ctdb::tools::bench::fetch_lock::{format_counter, parse_counter};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const DB: &str = "fetchlock.tdb";
const TIMEOUT: Duration = Duration::from_secs(30);

fn socket(c: &LocalCluster, pnn: u32) -> PathBuf {
    c.node_base(pnn).join("run/ctdbd.socket")
}

/// Takes turns on the nodes: every turn fetch-locks `key` on the next node, checks the
/// counter is exactly one more than the last turn stored, and stores the next value.
fn turns_on_every_node(c: &LocalCluster, key: &[u8], rounds: u64) {
    let mut clients: Vec<Client> = (0..c.nodes)
        .map(|n| Client::connect(&socket(c, n)).unwrap())
        .collect();
    let handles: Vec<DbHandle> = clients
        .iter_mut()
        .map(|client| DbHandle::attach(client, DB).unwrap())
        .collect();
    let mut last_rsn = 0;
    for turn in 0..rounds {
        let pnn = (turn % u64::from(c.nodes)) as usize;
        let db = &handles[pnn];
        let mut lock = db
            .fetch_lock_timeout(&mut clients[pnn], key, TIMEOUT)
            .unwrap();
        assert_eq!(lock.header().dmaster, db.pnn(), "turn {turn}");
        assert!(
            turn == 0 || lock.header().rsn > last_rsn,
            "turn {turn}: rsn {} after {last_rsn}",
            lock.header().rsn
        );
        last_rsn = lock.header().rsn;
        let value = parse_counter(lock.data()).unwrap();
        assert_eq!(value, turn, "counter on node {pnn} at turn {turn}");
        lock.store(&format_counter(value + 1)).unwrap();
    }
    // Everyone agrees on the end value, and after the last read the record is node 0's.
    for (pnn, db) in handles.iter().enumerate() {
        let lock = db
            .fetch_lock_timeout(&mut clients[pnn], key, TIMEOUT)
            .unwrap();
        assert_eq!(parse_counter(lock.data()).unwrap(), rounds, "node {pnn}");
    }
}

/// Several worker processes per node increment one key at once (`ctdb-bench fetch-lock`,
/// which fails on a lost update); returns its key=value output.
fn contended(c: &LocalCluster, key: &str, per_node: usize, count: usize) -> String {
    let sockets: Vec<String> = (0..c.nodes)
        .map(|n| socket(c, n).display().to_string())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ctdb-bench"))
        .args(["fetch-lock", "--sockets", &sockets.join(",")])
        .args(["--db", DB, "--key", key])
        .args(["--per-node", &per_node.to_string()])
        .args(["--count", &count.to_string(), "--timeout", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctdb-bench fetch-lock failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |k: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {stdout}"))
    };
    let total = (c.nodes as usize * per_node * count) as u64;
    assert_eq!(value("locks"), total, "{stdout}");
    assert_eq!(
        value("final_value"),
        value("start_value") + total,
        "{stdout}"
    );
    stdout
}

fn exercise(c: &LocalCluster) -> String {
    turns_on_every_node(c, b"turns", 30);
    contended(c, "hot", 3, 150)
}

fn helpers_seen(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("lock_helpers="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn fetch_lock_on_ctdb_rs_nodes() {
    let c = LocalCluster::setup("fetchlock", Flavour::Ours, 3, "127.0.125", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    let out = exercise(&c);
    // The daemon waits for client-held chains itself: never a lock helper.
    assert_eq!(helpers_seen(&out), 0, "{out}");
}

#[test]
fn fetch_lock_on_a_mixed_cluster() {
    let c = LocalCluster::setup("fetchlock-mixed", Flavour::Stock, 3, "127.0.126", &[]);
    c.run_ours_on(&[2]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    exercise(&c);
}

#[test]
fn fetch_lock_on_stock_nodes() {
    let c = LocalCluster::setup("fetchlock-stock", Flavour::Stock, 3, "127.0.127", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    exercise(&c);
}
