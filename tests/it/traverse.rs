//! Database traverse and the stock CLI's database commands (`catdb`, `cattdb`, `backupdb`,
//! `restoredb`, `dumpdbbackup`, `wipedb`, `detach`, `setdbreadonly`, `setdbsticky`,
//! `getdbstatus`) against ctdb-rs, and the same commands' output compared with stock.

use crate::cluster::{Flavour, LocalCluster};
use ctdb::common::tdb::{StoreMode, Tdb, TdbFlags};
use ctdb::protocol::{LtdbHeader, Marshal};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn attach_everywhere(c: &LocalCluster, dbs: &[(&str, bool)]) {
    for (name, persistent) in dbs {
        let mut args = vec!["attach", name];
        if *persistent {
            args.push("persistent");
        }
        c.ctdb_ok(0, &args);
    }
    c.wait_for(
        "databases attached everywhere",
        Duration::from_secs(30),
        || {
            (0..c.nodes).all(|n| {
                let map = c.ctdb_stdout(n, &["getdbmap"]);
                dbs.iter().all(|(name, _)| map.contains(name))
            })
        },
    );
    c.wait_recovered(Duration::from_secs(60));
}

/// `catdb` output as key → value (data line), checking that no key appears twice.
fn catdb_records(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut key = None;
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("key(") {
            key = Some(k.to_string());
        } else if let Some(d) = line.strip_prefix("data(") {
            let k = key.take().expect("data without key");
            assert!(out.insert(k.clone(), d.to_string()).is_none(), "{k} twice");
        }
    }
    out
}

fn dumped(text: &str) -> usize {
    let line = text
        .lines()
        .find(|l| l.starts_with("Dumped "))
        .unwrap_or_else(|| panic!("no count in {text}"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The record blocks of `catdb`/`cattdb` output in sorted order, so that outputs whose records
/// arrive in a different order compare equal.
fn sorted_blocks(text: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut rest = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("Dumped ") {
            rest.push(line.to_string());
        } else if line.is_empty() {
            if !cur.is_empty() {
                blocks.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        blocks.push(cur);
    }
    blocks.sort();
    blocks.join("\n") + &rest.join("\n")
}

#[test]
fn catdb_lists_every_record_once_and_database_commands_work() {
    let c = LocalCluster::setup("traverse", Flavour::Ours, 3, "127.0.110", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    attach_everywhere(&c, &[("test.tdb", false), ("p.tdb", true)]);

    // Records written through every node, some of them rewritten on another node.
    let mut expected = BTreeMap::new();
    for writer in 0..3u32 {
        for i in 0..4 {
            let key = format!("k{writer}{i}");
            let value = format!("v{writer}{i}");
            c.ctdb_ok(writer, &["writekey", "test.tdb", &key, &value]);
            c.ctdb_ok(writer, &["pstore", "p.tdb", &key, &value]);
            expected.insert(key, value);
        }
    }
    c.ctdb_ok(2, &["writekey", "test.tdb", "k00", "moved"]);
    expected.insert("k00".into(), "moved".into());

    for pnn in 0..3 {
        let out = c.ctdb_ok(pnn, &["catdb", "test.tdb"]);
        let got = catdb_records(&out);
        assert_eq!(dumped(&out), expected.len(), "node {pnn}: {out}");
        let want: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| {
                (
                    format!("{}) = \"{k}\"", k.len()),
                    format!("{}) = \"{v}\"", v.len()),
                )
            })
            .collect();
        assert_eq!(got, want, "catdb test.tdb on node {pnn}");
        let out = c.ctdb_ok(pnn, &["catdb", "p.tdb"]);
        // The persistent database also holds its sequence number record.
        assert_eq!(dumped(&out), 12 + 1, "node {pnn}: {out}");
    }
    // cattdb reads the local file: every record is somewhere.
    let local: usize = (0..3)
        .map(|pnn| dumped(&c.ctdb_ok(pnn, &["cattdb", "test.tdb"])))
        .sum();
    assert!(local >= expected.len());

    // backupdb → wipedb → restoredb gives the same content back.
    let backup = c.dir().join("p.backup");
    let backup = backup.to_str().unwrap();
    let before = sorted_blocks(&c.ctdb_ok(1, &["catdb", "p.tdb"]));
    c.ctdb_ok(1, &["backupdb", "p.tdb", backup]);
    let dump = c.ctdb_ok(0, &["dumpdbbackup", backup]);
    assert!(dump.contains("Dumped 13 record(s)"), "{dump}");
    c.ctdb_ok(0, &["wipedb", "p.tdb"]);
    c.wait_recovered(Duration::from_secs(60));
    for pnn in 0..3 {
        assert_eq!(dumped(&c.ctdb_ok(pnn, &["catdb", "p.tdb"])), 0);
    }
    c.ctdb_ok(2, &["restoredb", backup]);
    c.wait_recovered(Duration::from_secs(60));
    for pnn in 0..3 {
        let after = sorted_blocks(&c.ctdb_ok(pnn, &["catdb", "p.tdb"]));
        assert_eq!(after, before, "restored p.tdb on node {pnn}");
    }

    // Flags.
    c.ctdb_ok(0, &["setdbreadonly", "test.tdb"]);
    c.ctdb_ok(0, &["setdbsticky", "test.tdb"]);
    // As in stock, the flags are set on the node asked only.
    for pnn in 0..3 {
        let status = c.ctdb_ok(pnn, &["getdbstatus", "test.tdb"]);
        let want = if pnn == 0 { "yes" } else { "no" };
        assert!(
            status.contains(&format!("STICKY: {want}\nREADONLY: {want}")),
            "node {pnn}: {status}"
        );
    }
    let out = c.ctdb(0, &["setdbsticky", "p.tdb"]);
    assert!(!out.status.success());

    // Detach: refused while clients may attach, then gone from every node.
    let out = c.ctdb(0, &["detach", "test.tdb"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Set AllowclientDBAttach=0"));
    for pnn in 0..3 {
        c.ctdb_ok(pnn, &["setvar", "AllowClientDBAttach", "0"]);
    }
    let out = c.ctdb(0, &["detach", "p.tdb"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Only volatile databases"));
    c.ctdb_ok(0, &["detach", "test.tdb"]);
    c.wait_for(
        "test.tdb detached everywhere",
        Duration::from_secs(10),
        || (0..3).all(|n| !c.ctdb_stdout(n, &["getdbmap"]).contains("test.tdb")),
    );
}

/// A persistent database file with `count` records, written before the daemons start.
fn write_persistent_file(c: &LocalCluster, pnn: u32, name: &str, count: u32) {
    let dir = c.node_base(pnn).join("db/persistent");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.{pnn}"));
    let tdb = Tdb::open(
        &path,
        10007,
        TdbFlags::DEFAULT,
        libc::O_RDWR | libc::O_CREAT,
        0o600,
    )
    .unwrap();
    let header = LtdbHeader {
        rsn: 1,
        dmaster: pnn,
        reserved1: 0,
        flags: 0,
    }
    .to_bytes();
    for i in 0..count {
        let mut value = header.clone();
        value.extend_from_slice(format!("value-{i:06}-{}", "x".repeat(40)).as_bytes());
        tdb.store(format!("key-{i:06}").as_bytes(), &value, StoreMode::Replace)
            .unwrap();
    }
}

/// Writes `count` records straight into the attached volatile database of every node, as a
/// client holding the record would (each node dmaster of a third of the keys).
fn fill_volatile(c: &LocalCluster, name: &str, count: u32) {
    use ctdb::common::tdb::robust_mutexes_supported;
    use ctdb::server::database::db_tdb_flags;
    let flags = db_tdb_flags(0, true, robust_mutexes_supported());
    for pnn in 0..c.nodes {
        let path = c.node_base(pnn).join(format!("db/volatile/{name}.{pnn}"));
        let tdb = Tdb::open(&path, 0, flags, libc::O_RDWR, 0o600).unwrap();
        let header = LtdbHeader {
            rsn: 1,
            dmaster: pnn,
            reserved1: 0,
            flags: 0,
        }
        .to_bytes();
        for i in (0..count).filter(|i| i % c.nodes == pnn) {
            let mut value = header.clone();
            value.extend_from_slice(format!("volatile-{i:06}").as_bytes());
            tdb.store(
                format!("vkey-{i:06}").as_bytes(),
                &value,
                StoreMode::Replace,
            )
            .unwrap();
        }
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // Test harness timing.
fn large_traverse_leaves_the_daemon_responsive() {
    const RECORDS: u32 = 20_000;
    let c = LocalCluster::setup("traverse-big", Flavour::Ours, 3, "127.0.111", &[]);
    write_persistent_file(&c, 0, "big.tdb", RECORDS);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(90));
    c.wait_recovered(Duration::from_secs(60));
    attach_everywhere(&c, &[("bigv.tdb", false)]);
    fill_volatile(&c, "bigv.tdb", RECORDS);
    for pnn in 0..3 {
        let out = c.ctdb_ok(pnn, &["catdb", "bigv.tdb"]);
        assert_eq!(
            dumped(&out),
            RECORDS as usize,
            "catdb bigv.tdb on node {pnn}"
        );
        assert_eq!(catdb_records(&out).len(), RECORDS as usize);
    }
    for pnn in 0..3 {
        let base = c.node_base(pnn);
        let mut catdb = std::process::Command::new("/usr/bin/ctdb")
            .args(["catdb", "big.tdb"])
            .env("CTDB_TEST_MODE", "yes")
            .env("CTDB_BASE", &base)
            .env("CTDB_SOCKET", base.join("run/ctdbd.socket"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut pings = 0;
        let mut slowest = Duration::ZERO;
        while catdb.try_wait().unwrap().is_none() && pings < 20 {
            let t = Instant::now();
            let out = c.ctdb(pnn, &["ping"]);
            assert!(out.status.success(), "ping during traverse failed");
            slowest = slowest.max(t.elapsed());
            pings += 1;
        }
        let out = catdb.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        // The sequence number record comes with the data after the recovery.
        let n = dumped(&text);
        assert!(
            n == RECORDS as usize || n == RECORDS as usize + 1,
            "node {pnn} dumped {n}"
        );
        assert_eq!(catdb_records(&text).len(), n);
        assert!(slowest < Duration::from_secs(2), "ping took {slowest:?}");
        // A client that goes away mid-traverse: the walks are killed and the node carries on.
        let mut gone = std::process::Command::new("/usr/bin/ctdb")
            .args(["catdb", "big.tdb"])
            .env("CTDB_TEST_MODE", "yes")
            .env("CTDB_BASE", &base)
            .env("CTDB_SOCKET", base.join("run/ctdbd.socket"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Kill it once the traverse is under way: its first output arrived, and the unread
        // pipe holds the rest of the walk back.
        let mut first = [0u8; 1];
        std::io::Read::read_exact(gone.stdout.as_mut().unwrap(), &mut first).unwrap();
        let _ = gone.kill();
        let _ = gone.wait();
        c.ctdb_ok(pnn, &["ping"]);
        let log = c.node_base(pnn).join("log.ctdb");
        c.wait_for(
            "the cancelled traverse logged",
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("Traverse cancelled by client disconnect")
            },
        );
        eprintln!(
            "node {pnn}: {n} records in {:?}, {pings} pings, slowest {slowest:?}",
            started.elapsed()
        );
    }
}

/// Rewrites what legitimately differs between two clusters' outputs.
fn normalise(text: &str, c: &LocalCluster) -> String {
    let dir = c.dir().display().to_string();
    text.lines()
        .map(|l| {
            let l = l.replace(&dir, "<DIR>");
            if l.starts_with("Dumping database ") || l.starts_with("Restoring database ") {
                // The backup time.
                l.split(" @ ").next().unwrap_or("").to_string()
            } else if l.starts_with("rsn: ") {
                "rsn: <RSN>".to_string()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn script(c: &LocalCluster) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut step = |args: &[&str]| {
        let o = c.ctdb(0, args);
        let text = format!(
            "rc={:?}\n{}\n--stderr--\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let text = if matches!(
            args.first(),
            Some(&"catdb") | Some(&"cattdb") | Some(&"dumpdbbackup")
        ) {
            sorted_blocks(&text)
        } else {
            text
        };
        out.push((args.join(" "), normalise(&text, c)));
    };
    let backup = c.dir().join("p.backup").display().to_string();
    step(&["getdbmap"]);
    for k in ["a", "b", "c"] {
        step(&["writekey", "test.tdb", k, &format!("value-{k}")]);
        step(&["pstore", "p.tdb", k, &format!("value-{k}")]);
    }
    step(&["catdb", "test.tdb"]);
    step(&["catdb", "p.tdb"]);
    step(&["cattdb", "test.tdb"]);
    step(&["getdbstatus", "test.tdb"]);
    step(&["getdbstatus", "p.tdb"]);
    step(&["setdbreadonly", "test.tdb"]);
    step(&["setdbsticky", "test.tdb"]);
    step(&["setdbreadonly", "p.tdb"]);
    step(&["setdbsticky", "p.tdb"]);
    step(&["getdbmap"]);
    step(&["getdbstatus", "test.tdb"]);
    step(&["backupdb", "p.tdb", &backup]);
    step(&["dumpdbbackup", &backup]);
    step(&["wipedb", "p.tdb"]);
    c.wait_recovered(Duration::from_secs(60));
    step(&["catdb", "p.tdb"]);
    step(&["restoredb", &backup]);
    c.wait_recovered(Duration::from_secs(60));
    step(&["catdb", "p.tdb"]);
    step(&["detach", "test.tdb"]);
    step(&["catdb", "nosuch.tdb"]);
    step(&["detach", "nosuch.tdb"]);
    for pnn in 0..c.nodes {
        c.ctdb_ok(pnn, &["setvar", "AllowClientDBAttach", "0"]);
    }
    step(&["detach", "p.tdb"]);
    // Not test.tdb: detaching a read-only database crashes stock 4.17.12 (a bad talloc free
    // in ctdb_control_db_detach).
    step(&["detach", "d.tdb", "nosuch.tdb"]);
    // The broadcast detach reaches the other nodes a little later.
    c.wait_for("d.tdb detached everywhere", Duration::from_secs(10), || {
        (0..c.nodes).all(|n| !c.ctdb_stdout(n, &["getdbmap"]).contains("d.tdb"))
    });
    step(&["getdbmap"]);
    out
}

#[test]
fn database_commands_print_what_stock_prints() {
    let stock = LocalCluster::setup("traverse-stock", Flavour::Stock, 3, "127.0.112", &[]);
    let ours = LocalCluster::setup("traverse-ours", Flavour::Ours, 3, "127.0.113", &[]);
    for c in [&stock, &ours] {
        c.start();
    }
    for c in [&stock, &ours] {
        c.wait_connected(Duration::from_secs(30));
        c.wait_all_ok(Duration::from_secs(90));
        attach_everywhere(c, &[("test.tdb", false), ("p.tdb", true), ("d.tdb", false)]);
    }
    let want = script(&stock);
    let got = script(&ours);
    for ((cmd, w), (_, g)) in want.iter().zip(&got) {
        assert_eq!(g, w, "ctdb {cmd}: ours (left) differs from stock (right)");
    }
}

#[test]
fn catdb_across_stock_and_ctdb_rs_nodes() {
    use crate::cluster::{our_ctdbd, our_eventd};
    let c = LocalCluster::setup("traverse-mixed", Flavour::Stock, 3, "127.0.114", &[]);
    let env = format!(
        "NODE_CTDBD={}\nexport CTDB_EVENTD={}\n",
        our_ctdbd().display(),
        our_eventd().display()
    );
    std::fs::write(c.node_base(2).join("node.env"), env).unwrap();
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    attach_everywhere(&c, &[("test.tdb", false), ("p.tdb", true)]);
    let mut expected = BTreeMap::new();
    for writer in 0..3u32 {
        for i in 0..3 {
            let key = format!("m{writer}{i}");
            c.ctdb_ok(writer, &["writekey", "test.tdb", &key, "v"]);
            c.ctdb_ok(writer, &["pstore", "p.tdb", &key, "v"]);
            expected.insert(
                format!("{}) = \"{key}\"", key.len()),
                "1) = \"v\"".to_string(),
            );
        }
    }
    for pnn in 0..3 {
        let out = c.ctdb_ok(pnn, &["catdb", "test.tdb"]);
        assert_eq!(
            catdb_records(&out),
            expected,
            "catdb test.tdb from node {pnn}"
        );
        let out = c.ctdb_ok(pnn, &["catdb", "p.tdb"]);
        assert_eq!(
            dumped(&out),
            expected.len() + 1,
            "catdb p.tdb from node {pnn}"
        );
    }
}
