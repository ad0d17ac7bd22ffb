//! Per-database statistics, call statistics and client notifications on real clusters: the
//! same record traffic on three ctdb-rs nodes and on three stock nodes gives the same
//! `ctdb dbstatistics` (hop counts, hot keys; latencies normalised) and the same call counters
//! in `ctdb statistics`; a REGISTER_NOTIFY message reaches listeners on every node when its
//! client disconnects; DB_VACUUM answers 0 after a run on both; concurrent fetches of one
//! remote record by several clients of a node cost one REQ_CALL (fetch collapse).

use crate::cluster::{Flavour, LocalCluster};
use ctdb::client::Client;
use std::time::Duration;

const DB: &str = "dbstats-test.tdb";

fn start(name: &str, flavour: Flavour, prefix: &str) -> LocalCluster {
    let c = LocalCluster::setup(name, flavour, 3, prefix, &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(90));
    c.ctdb_ok(0, &["attach", DB]);
    c.wait_for("the database everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains(DB))
    });
    c.wait_for("recovered", Duration::from_secs(90), || {
        (0..c.nodes).all(|n| {
            c.ctdb_stdout(n, &["status"])
                .contains("Recovery mode:NORMAL")
        })
    });
    c
}

/// Record traffic whose routing only depends on the keys and the VNN map.
fn traffic(c: &LocalCluster) {
    for round in 0..3 {
        for pnn in [1, 2, 0] {
            c.ctdb_ok(pnn, &["writekey", DB, "hot", &format!("v{round}{pnn}")]);
        }
    }
    c.ctdb_ok(2, &["readkey", DB, "hot"]);
    c.ctdb_ok(1, &["writekey", DB, "cold", "x"]);
    c.ctdb_ok(2, &["readkey", DB, "cold"]);
}

/// Latencies and hot-key counts depend on timing; everything else must be equal.
fn normalise_dbstatistics(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.contains("latency") {
                let (name, _) = l.split_at(l.find("MIN/AVG/MAX").unwrap_or(l.len()));
                format!("{name}MIN/AVG/MAX <latency>")
            } else if let Some(rest) = l.trim_start().strip_prefix("Count:") {
                let key = rest.split_once(' ').map(|(_, k)| k).unwrap_or("");
                let count = rest.split(' ').next().unwrap_or("0");
                let seen = if count == "0" { "0" } else { "N" };
                format!("     Count:{seen} {key}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of `ctdb statistics` that record calls fill.
fn call_statistics(text: &str) -> Vec<String> {
    const NAMES: [&str; 8] = [
        "req_call",
        "reply_call",
        "req_dmaster",
        "reply_dmaster",
        "total_calls",
        "pending_calls",
        "max_hop_count",
        "hop_count_buckets",
    ];
    text.lines()
        .filter(|l| {
            let name = l.trim_start().split([' ', ':']).next().unwrap_or("");
            NAMES.contains(&name)
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// How many client calls `ctdb statistics` reports latencies for.
fn call_latency_count(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.contains("call_latency"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// A client registers a notification and disconnects: listeners on every node get it.
fn notification_round(c: &LocalCluster) {
    const SRVID: u64 = 0xF300_0000_0000_00AB;
    let socket = |pnn: u32| c.node_base(pnn).join("run/ctdbd.socket");
    let mut listeners: Vec<Client> = (0..c.nodes)
        .map(|pnn| {
            let mut l = Client::connect(&socket(pnn)).unwrap();
            assert_eq!(l.register_srvid(SRVID).unwrap(), 0);
            l
        })
        .collect();
    let mut leaver = Client::connect(&socket(1)).unwrap();
    assert_eq!(leaver.register_notify(SRVID, b"gone").unwrap(), 0);
    assert_eq!(leaver.register_notify(SRVID, b"twice").unwrap(), -1);
    assert_eq!(leaver.register_notify(SRVID + 1, b"dropped").unwrap(), 0);
    assert_eq!(leaver.deregister_notify(SRVID + 1).unwrap(), 0);
    assert_eq!(leaver.deregister_notify(SRVID + 1).unwrap(), -1);
    drop(leaver);
    for (pnn, l) in listeners.iter_mut().enumerate() {
        let m = l
            .recv_message(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("node {pnn}: no notification: {e:?}"));
        assert_eq!((m.srvid, m.data.as_slice()), (SRVID, &b"gone"[..]));
        assert!(
            l.recv_message(Duration::from_millis(300)).is_err(),
            "node {pnn}: the deregistered notification was sent"
        );
    }
}

/// DB_VACUUM of the test database on every node: full and fast runs answer 0.
fn vacuum_on_demand(c: &LocalCluster) -> Vec<i32> {
    use ctdb::protocol::header::CURRENT_NODE;
    use ctdb::protocol::opcode::ControlOpcode;
    use ctdb::protocol::types::DbVacuum;
    use ctdb::protocol::Marshal;
    let mut statuses = Vec::new();
    for pnn in 0..c.nodes {
        let mut client = Client::connect(&c.node_base(pnn).join("run/ctdbd.socket")).unwrap();
        for full in [true, false] {
            let request = DbVacuum {
                db_id: ctdb::protocol::hash::db_id(DB),
                full_vacuum_run: full,
            };
            let reply = client
                .control(
                    CURRENT_NODE,
                    ControlOpcode::DbVacuum,
                    0,
                    0,
                    request.to_bytes(),
                    Duration::from_secs(30),
                )
                .unwrap();
            statuses.push(reply.status);
        }
    }
    statuses
}

/// REQ_CALLs that nodes received, from the node section of `ctdb statistics`.
fn node_req_calls(c: &LocalCluster) -> u32 {
    (0..c.nodes)
        .map(|pnn| {
            let text = c.ctdb_ok(pnn, &["statistics"]);
            text.lines()
                .find(|l| l.trim_start().starts_with("req_call"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("no req_call in {text}"))
        })
        .sum()
}

/// Several clients of node 1 fetch a record that node 0 (its lmaster) holds, all at once.
/// With fetch collapse exactly one REQ_CALL leaves node 1, whatever the timing: later calls
/// either wait for it or find the record already local. Returns the REQ_CALL count.
fn collapsed_fetches(c: &LocalCluster) -> u32 {
    use ctdb::protocol::hash;
    use ctdb::protocol::header::CURRENT_NODE;
    use ctdb::protocol::packet::{ReqCall, CALL_FLAG_IMMEDIATE_MIGRATION, FETCH_FUNC};
    const CLIENTS: usize = 6;
    let key = (0u32..)
        .map(|i| format!("collapse-{i}"))
        .find(|k| hash::lmaster(hash::ctdb_hash(k.as_bytes()), &[0, 1, 2]) == Some(0))
        .unwrap();
    c.ctdb_ok(0, &["writekey", DB, &key, "shared"]);
    for pnn in 0..c.nodes {
        c.ctdb_ok(pnn, &["statisticsreset"]);
    }
    let socket = c.node_base(1).join("run/ctdbd.socket");
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect(&socket).unwrap())
        .collect();
    let call = ReqCall {
        flags: CALL_FLAG_IMMEDIATE_MIGRATION,
        db_id: hash::db_id(DB),
        callid: FETCH_FUNC,
        hopcount: 0,
        key: key.into_bytes(),
        calldata: Vec::new(),
    };
    let reqids: Vec<u32> = clients
        .iter_mut()
        .map(|cl| cl.send_call(CURRENT_NODE, call.clone()).unwrap())
        .collect();
    for (cl, reqid) in clients.iter_mut().zip(reqids) {
        let reply = cl.wait_call(reqid, Duration::from_secs(20)).unwrap();
        assert_eq!((reply.status, reply.data.as_slice()), (0, &b"shared"[..]));
    }
    node_req_calls(c)
}

#[test]
fn dbstatistics_and_call_statistics_match_stock_and_notifications_reach_every_node() {
    let mut outputs = Vec::new();
    for (name, flavour, prefix) in [
        ("dbstats-ours", Flavour::Ours, "127.0.138"),
        ("dbstats-stock", Flavour::Stock, "127.0.139"),
    ] {
        let c = start(name, flavour, prefix);
        for pnn in 0..c.nodes {
            c.ctdb_ok(pnn, &["statisticsreset"]);
        }
        traffic(&c);
        let per_node: Vec<(String, String)> = (0..c.nodes)
            .map(|pnn| {
                (
                    c.ctdb_ok(pnn, &["dbstatistics", DB]),
                    c.ctdb_ok(pnn, &["statistics"]),
                )
            })
            .collect();
        notification_round(&c);
        assert_eq!(vacuum_on_demand(&c), vec![0; 6], "{name}: DB_VACUUM");
        assert_eq!(
            collapsed_fetches(&c),
            1,
            "{name}: REQ_CALLs for collapsed fetches"
        );
        outputs.push(per_node);
    }
    let (ours, stock) = (&outputs[0], &outputs[1]);
    for pnn in 0..3 {
        let (our_db, our_stats) = &ours[pnn];
        let (stock_db, stock_stats) = &stock[pnn];
        eprintln!("node {pnn} ours:\n{our_db}\n{our_stats}\nstock:\n{stock_db}\n{stock_stats}");
        assert_eq!(
            normalise_dbstatistics(our_db),
            normalise_dbstatistics(stock_db),
            "dbstatistics of node {pnn}"
        );
        assert_eq!(
            call_statistics(our_stats),
            call_statistics(stock_stats),
            "call statistics of node {pnn}"
        );
        assert_eq!(
            call_latency_count(our_stats),
            call_latency_count(stock_stats),
            "call latency samples of node {pnn}"
        );
    }
}

/// With a low `RepackLimit`, the free space deleted records leave is repacked by the helper
/// after a vacuum run, and the remaining records are intact. One node: every record is its
/// own, so vacuuming deletes at once.
#[test]
fn vacuuming_repacks_through_the_helper() {
    const REPACK_DB: &str = "repack-test.tdb";
    let c = LocalCluster::setup("dbstats-repack", Flavour::Ours, 1, "127.0.140", &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(90));
    c.ctdb_ok(0, &["setvar", "VacuumInterval", "1"]);
    c.ctdb_ok(0, &["setvar", "RepackLimit", "2"]);
    // Deleted records go straight to the free list instead of staying as dead records.
    c.ctdb_ok(0, &["setvar", "DatabaseMaxDead", "0"]);
    c.ctdb_ok(0, &["attach", REPACK_DB]);
    c.wait_for("recovered", Duration::from_secs(90), || {
        c.ctdb_stdout(0, &["status"])
            .contains("Recovery mode:NORMAL")
    });
    // Every other record goes: free blocks between live records, which libtdb cannot merge.
    for i in 0..24 {
        let key = format!("k-{i:02}");
        c.ctdb_ok(0, &["writekey", REPACK_DB, &key, &"x".repeat(200)]);
    }
    for i in (0..24).step_by(2) {
        c.ctdb_ok(0, &["deletekey", REPACK_DB, &format!("k-{i:02}")]);
    }
    let log = c.node_base(0).join("log.ctdb");
    c.wait_for("a repack", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&format!("Repacked {REPACK_DB}")))
    });
    for i in 0..24 {
        let out = c.ctdb_ok(0, &["readkey", REPACK_DB, &format!("k-{i:02}")]);
        assert_eq!(
            out.contains(&"x".repeat(200)),
            i % 2 == 1,
            "k-{i:02}: {out}"
        );
    }
}
