//! Read-only delegations on real clusters: read-only fetches (`ctdb readkey <db> <key>
//! readonly`) on other nodes get the value without moving the dmaster, `ctdb cattdb` shows
//! RO_HAVE_DELEGATIONS on the dmaster and RO_HAVE_READONLY copies elsewhere, and a write
//! through another node revokes the copies first, so no node reads the old value after the
//! write returned. Run on ctdb-rs nodes, on stock nodes (to prove the checks match stock)
//! and on a mixed cluster. Sticky records: a record that comes back to a node that served
//! it before is pinned down there for StickyPindown ms. Our client's `fetch_readonly` gets
//! read-only copies too, and a reader holding one only delays a write on another node.

use crate::cluster::{Flavour, LocalCluster};
use ctdb::client::db::{DbError, DbHandle};
use ctdb::client::Client;
use ctdb::protocol::ltdb::REC_RO_HAVE_READONLY;
use std::time::{Duration, Instant};

const DB: &str = "readonly-test.tdb";
const KEY: &str = "ro-key";

/// The header and data lines `ctdb cattdb` prints for KEY in a node's own file.
fn local_record(c: &LocalCluster, pnn: u32) -> Option<String> {
    let out = c.ctdb_ok(pnn, &["cattdb", DB]);
    let start = out.find(&format!("\"{KEY}\""))?;
    let rest = out.get(start..)?;
    let end = rest.get(1..)?.find("key(").map_or(rest.len(), |e| e + 1);
    Some(rest.get(..end)?.to_owned())
}

fn dmaster_of(record: &str) -> Option<u32> {
    record
        .lines()
        .find_map(|l| l.trim().strip_prefix("dmaster: "))
        .and_then(|v| v.trim().parse().ok())
}

fn read(c: &LocalCluster, pnn: u32, readonly: bool) -> String {
    let mut args = vec!["readkey", DB, KEY];
    if readonly {
        args.push("readonly");
    }
    c.ctdb_ok(pnn, &args)
}

fn delegations_and_revoke(c: &LocalCluster) {
    c.ctdb_ok(0, &["attach", DB]);
    c.wait_for("the database everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains(DB))
    });
    for pnn in 0..c.nodes {
        c.ctdb_ok(pnn, &["setdbreadonly", DB]);
    }
    c.wait_for("READONLY everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains("READONLY"))
    });

    c.ctdb_ok(0, &["writekey", DB, KEY, "value-one"]);
    let rec0 = local_record(c, 0).expect("record on node 0");
    assert_eq!(dmaster_of(&rec0), Some(0), "{rec0}");

    for pnn in [1, 2] {
        let got = read(c, pnn, true);
        assert!(got.contains("value-one"), "node {pnn} read {got:?}");
        let copy = local_record(c, pnn).expect("read-only copy");
        assert!(copy.contains("RO_HAVE_READONLY"), "node {pnn}: {copy}");
        assert!(!copy.contains("RO_HAVE_DELEGATIONS"), "node {pnn}: {copy}");
        assert_eq!(dmaster_of(&copy), Some(0), "node {pnn}: {copy}");
        assert!(copy.contains("value-one"), "node {pnn}: {copy}");
    }
    let rec0 = local_record(c, 0).unwrap();
    assert_eq!(
        dmaster_of(&rec0),
        Some(0),
        "the dmaster did not move: {rec0}"
    );
    assert!(rec0.contains("RO_HAVE_DELEGATIONS"), "{rec0}");
    // A second read-only fetch is served from the local copy.
    assert!(read(c, 2, true).contains("value-one"));

    // A write through node 1 revokes both copies, then migrates the record there.
    c.ctdb_ok(1, &["writekey", DB, KEY, "value-two"]);
    let rec1 = local_record(c, 1).unwrap();
    assert_eq!(dmaster_of(&rec1), Some(1), "{rec1}");
    assert!(!rec1.contains("RO_"), "{rec1}");
    let copy2 = local_record(c, 2).unwrap();
    assert!(
        !copy2.contains("RO_HAVE_READONLY"),
        "node 2 kept its read-only copy after the write: {copy2}"
    );
    for pnn in [2, 0] {
        let got = read(c, pnn, true);
        assert!(
            got.contains("value-two"),
            "stale read-only read on {pnn}: {got:?}"
        );
    }
    let rec1 = local_record(c, 1).unwrap();
    assert_eq!(dmaster_of(&rec1), Some(1), "{rec1}");
    assert!(rec1.contains("RO_HAVE_DELEGATIONS"), "{rec1}");

    // Node 1 now revokes the copies on nodes 0 and 2 for a write through node 2.
    c.ctdb_ok(2, &["writekey", DB, KEY, "value-three"]);
    for pnn in [0, 1] {
        let copy = local_record(c, pnn).unwrap();
        assert!(!copy.contains("RO_HAVE_READONLY"), "node {pnn}: {copy}");
    }
    for pnn in [0, 1, 2] {
        let got = read(c, pnn, true);
        assert!(
            got.contains("value-three"),
            "stale read-only read on {pnn}: {got:?}"
        );
        let got = read(c, pnn, false);
        assert!(got.contains("value-three"), "stale read on {pnn}: {got:?}");
    }
}

#[test]
fn readonly_and_sticky_on_ctdb_rs_nodes() {
    let c = LocalCluster::setup("readonly-ours", Flavour::Ours, 3, "127.0.135", &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    delegations_and_revoke(&c);
    client_reads_readonly_copies(&c);
    sticky_record_is_pinned_down(&c);
}

#[test]
fn readonly_and_sticky_on_stock_nodes() {
    let c = LocalCluster::setup("readonly-stock", Flavour::Stock, 3, "127.0.136", &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    delegations_and_revoke(&c);
    client_reads_readonly_copies(&c);
    sticky_record_is_pinned_down(&c);
}

#[test]
fn readonly_and_sticky_on_a_mixed_cluster() {
    // Node 0 (the first dmaster) runs stock, nodes 1 and 2 ctdb-rs.
    let c = LocalCluster::setup("readonly-mixed", Flavour::Stock, 3, "127.0.137", &[]);
    c.run_ours_on(&[1, 2]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    delegations_and_revoke(&c);
    client_reads_readonly_copies(&c);
    sticky_record_is_pinned_down(&c);
}

const STICKY_DB: &str = "sticky-test.tdb";
const PINDOWN_MS: u64 = 3000;

/// Every request counts as hot (HopcountMakeSticky 0), so node 0, which serves node 1's
/// migration, makes the record sticky; when node 0 fetches it back it is pinned down, and
/// node 2's write waits for the pin-down while node 0's own writes do not.
fn sticky_record_is_pinned_down(c: &LocalCluster) {
    c.ctdb_ok(0, &["attach", STICKY_DB]);
    c.wait_for("the database everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains(STICKY_DB))
    });
    for pnn in 0..c.nodes {
        c.ctdb_ok(pnn, &["setdbsticky", STICKY_DB]);
        c.ctdb_ok(pnn, &["setvar", "HopcountMakeSticky", "0"]);
        c.ctdb_ok(pnn, &["setvar", "StickyPindown", &PINDOWN_MS.to_string()]);
    }
    c.wait_for("STICKY everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains("STICKY"))
    });
    let write = |pnn: u32, value: &str| {
        #[allow(clippy::disallowed_methods)] // Wall time of a CLI call, outside any state machine.
        let start = Instant::now();
        c.ctdb_ok(pnn, &["writekey", STICKY_DB, "hot", value]);
        start.elapsed()
    };
    write(0, "a");
    write(1, "b");
    let back = write(0, "c");
    assert!(back < Duration::from_millis(PINDOWN_MS / 2), "{back:?}");
    let waited = write(2, "d");
    assert!(
        waited >= Duration::from_millis(PINDOWN_MS / 2),
        "node 2's write did not wait for the pin-down: {waited:?}"
    );
    for pnn in 0..c.nodes {
        let got = c.ctdb_ok(pnn, &["readkey", STICKY_DB, "hot"]);
        assert!(got.contains("size:1 ptr:[d]"), "node {pnn}: {got:?}");
    }
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// `DbHandle::fetch_readonly` against the daemons (the database is READONLY already): a
/// copy on node 1 that refuses stores; while node 1's client holds it, node 2's write waits
/// but node 1's daemon keeps answering; once released, the write lands and node 1 reads it.
fn client_reads_readonly_copies(c: &LocalCluster) {
    let key: &[u8] = b"client-key";
    let socket = |pnn: u32| c.node_base(pnn).join("run/ctdbd.socket");
    let mut clients: Vec<Client> = (0..c.nodes)
        .map(|n| Client::connect(&socket(n)).unwrap())
        .collect();
    let handles: Vec<DbHandle> = clients
        .iter_mut()
        .map(|client| DbHandle::attach(client, DB).unwrap())
        .collect();
    {
        let mut lock = handles[0]
            .fetch_lock_timeout(&mut clients[0], key, CLIENT_TIMEOUT)
            .unwrap();
        lock.store(b"c1").unwrap();
    }
    let mut copy = handles[1]
        .fetch_readonly_timeout(&mut clients[1], key, CLIENT_TIMEOUT)
        .unwrap();
    assert_eq!(copy.data(), b"c1");
    assert!(copy.is_readonly());
    assert_eq!(copy.header().dmaster, 0);
    assert_ne!(copy.header().flags & REC_RO_HAVE_READONLY, 0);
    assert!(matches!(copy.store(b"nope"), Err(DbError::ReadOnly)));

    std::thread::scope(|scope| {
        let writer = scope.spawn(|| c.ctdb_ok(2, &["writekey", DB, "client-key", "c2"]));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !writer.is_finished(),
            "the write did not wait for the reader"
        );
        #[allow(clippy::disallowed_methods)] // Wall time of a CLI call.
        let start = Instant::now();
        c.ctdb_ok(1, &["status"]);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "node 1 blocked: {took:?}");
        drop(copy);
        writer.join().unwrap();
    });
    let copy = handles[1]
        .fetch_readonly_timeout(&mut clients[1], key, CLIENT_TIMEOUT)
        .unwrap();
    assert_eq!(copy.data(), b"c2");
}
