//! Our `ctdb_recovery_helper` run by stock ctdbd, compared with stock's helper.
//!
//! Two stock 3-node clusters get the same databases and the same (deliberately diverging)
//! records; one runs our helper, the other stock's. After `ctdb recover` both must be OK and
//! every node of both must hold exactly the same records (dmaster compared relative to each
//! cluster's leader), which are also checked against what the recovery rules demand:
//! highest RSN per volatile key (ties as stock breaks them), deleted records gone, the
//! persistent database taken whole from the node with the highest sequence number.
//!
//! Those comparisons run our helper with its extensions off (`CTDB_RS_RECOVERY_STOCK=1`).
//! With them on (the default), a volatile database's records end up only at their lmaster;
//! [`our_partitioned_recovery_serves_the_same_records_as_stocks`] checks that result, and
//! that the cluster serves exactly what a stock-helper recovery serves.

use crate::cluster::{Flavour, LocalCluster};
use ctdb::common::tdb::{Tdb, TdbFlags, Traverse};
use ctdb::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_MIGRATED_WITH_DATA};
use ctdb::protocol::Marshal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const STOCK_HELPER: &str = "/usr/libexec/ctdb/ctdb_recovery_helper";
const SEQNUM_KEY: &[u8] = b"__db_sequence_number__\0";

fn our_helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctdb_recovery_helper"))
}

/// A stock cluster whose daemons run `helper` (through a wrapper that counts the runs).
struct Scenario {
    cluster: LocalCluster,
    leader: u32,
}

/// `node.env` lines that turn our helper's extensions off.
const STOCK_SWITCH: &str = "export CTDB_RS_RECOVERY_STOCK=1\n";

impl Scenario {
    fn start(name: &str, prefix: &str, helper: &Path) -> Self {
        Self::start_with(name, Flavour::Stock, prefix, helper, "")
    }

    /// Our helper behaving like stock's.
    fn start_stock_mode(name: &str, prefix: &str) -> Self {
        Self::start_with(name, Flavour::Stock, prefix, &our_helper(), STOCK_SWITCH)
    }

    fn start_with(name: &str, flavour: Flavour, prefix: &str, helper: &Path, env: &str) -> Self {
        let cluster = LocalCluster::setup(name, flavour, 3, prefix, &[]);
        let wrapper = cluster.dir().join("recovery-helper");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >>{runs}\nexec {helper} \"$@\"\n",
                runs = cluster.dir().join("helper-runs").display(),
                helper = helper.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        for pnn in 0..3 {
            std::fs::write(
                cluster.node_base(pnn).join("node.env"),
                format!("export CTDB_RECOVERY_HELPER={}\n{env}", wrapper.display()),
            )
            .unwrap();
        }
        cluster.start();
        cluster.wait_all_ok(Duration::from_secs(90));
        let leader = cluster.ctdb_stdout(0, &["leader"]).trim().parse().unwrap();
        Scenario { cluster, leader }
    }

    fn helper_runs(&self) -> usize {
        std::fs::read_to_string(self.cluster.dir().join("helper-runs"))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    fn ctdb_ok(&self, pnn: u32, args: &[&str]) -> String {
        let out = self.cluster.ctdb(pnn, args);
        assert!(
            out.status.success(),
            "ctdb {args:?} on node {pnn} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn db_path(&self, pnn: u32, name: &str) -> PathBuf {
        let kind = if name.starts_with("pers") {
            "persistent"
        } else {
            "volatile"
        };
        self.cluster
            .node_base(pnn)
            .join(format!("db/{kind}/{name}.{pnn}"))
    }

    /// Attaches the databases and fills them so that the nodes disagree.
    fn populate(&self) {
        self.ctdb_ok(0, &["attach", "vol.tdb"]);
        self.ctdb_ok(0, &["attach", "pers.tdb", "persistent"]);
        self.cluster
            .wait_for("databases on every node", Duration::from_secs(30), || {
                (0..3).all(|pnn| {
                    let map = self.cluster.ctdb_stdout(pnn, &["getdbmap"]);
                    map.contains("name:vol.tdb") && map.contains("name:pers.tdb")
                })
            });

        // Persistent: consistent transactions first, then node 2 gets ahead (a higher
        // sequence number, a record of its own and a deleted record) and node 1 gets a stale
        // extra record.
        self.ctdb_ok(0, &["pstore", "pers.tdb", "p-a", "from-0"]);
        self.ctdb_ok(1, &["pstore", "pers.tdb", "p-b", "from-1"]);
        self.ctdb_ok(2, &["pstore", "pers.tdb", "p-c", "from-2"]);
        let two = self.db_path(2, "pers.tdb");
        put(&two, SEQNUM_KEY, header(5, 2), &100u64.to_ne_bytes());
        put(&two, b"p-only-2", header(1, 2), b"newest");
        put(&two, b"p-c", header(2, 2), b"");
        put(
            &self.db_path(1, "pers.tdb"),
            b"p-stale-1",
            header(1, 1),
            b"stale",
        );

        // Volatile: per key, different RSNs, dmasters and values on the nodes.
        let leader = self.leader;
        let other = (leader + 1) % 3;
        let vol = |pnn: u32| self.db_path(pnn, "vol.tdb");
        put(&vol(0), b"v-high", header(5, 0), b"n0");
        put(&vol(1), b"v-high", header(9, 1), b"n1");
        put(&vol(2), b"v-high", header(7, 2), b"n2");
        put(&vol(1), b"v-gone", header(12, 1), b"");
        put(&vol(2), b"v-gone", header(3, 2), b"old");
        // Equal RSNs, pulled from node 0, 1, 2 in turn: a later copy replaces the collected
        // one only while that one names the leader as its dmaster.
        put(&vol(0), b"v-tie-a", header(4, leader), b"first");
        put(&vol(1), b"v-tie-a", header(4, other), b"second");
        put(&vol(2), b"v-tie-a", header(4, other), b"third");
        put(&vol(0), b"v-tie-b", header(4, other), b"first");
        put(&vol(1), b"v-tie-b", header(4, leader), b"second");
        put(&vol(2), b"v-single", header(1, 2), b"only");
        // And records written the ordinary way, migrating between nodes.
        self.ctdb_ok(1, &["writekey", "vol.tdb", "w-1", "one"]);
        self.ctdb_ok(2, &["writekey", "vol.tdb", "w-1", "two"]);
        self.ctdb_ok(0, &["writekey", "vol.tdb", "w-2", "zero"]);
    }

    /// `ctdb recover`, then waits until the cluster is OK again.
    fn recover(&self) {
        let runs = self.helper_runs();
        self.ctdb_ok(0, &["recover"]);
        self.cluster
            .wait_for("a helper run", Duration::from_secs(60), || {
                self.helper_runs() > runs
            });
        self.cluster.wait_all_ok(Duration::from_secs(90));
        for pnn in 0..3 {
            let out = self.ctdb_ok(pnn, &["status"]);
            assert!(out.contains("Recovery mode:NORMAL"), "node {pnn}: {out}");
        }
    }

    /// The copy of `name` on the nodes that are not the leader; they must all agree. On the
    /// leader a volatile record has the RSN one higher: the daemon bumps the RSN when it
    /// stores a record it is dmaster of, and the push makes the leader dmaster of everything.
    /// Dmasters are given relative to the leader (`L`) so that clusters with different
    /// leaders compare.
    fn contents(&self, name: &str) -> BTreeMap<Vec<u8>, Record> {
        let read = |pnn: u32| read_all(&self.db_path(pnn, name), self.leader);
        let others: Vec<u32> = (0..3).filter(|&pnn| pnn != self.leader).collect();
        let copy = read(others[0]);
        for &pnn in &others[1..] {
            assert_eq!(
                read(pnn),
                copy,
                "{name}: node {pnn} differs from node {}",
                others[0]
            );
        }
        let volatile = !name.starts_with("pers");
        let expected_on_leader: BTreeMap<Vec<u8>, Record> = copy
            .iter()
            .map(|(key, record)| {
                let mut record = record.clone();
                if volatile {
                    record.rsn += 1;
                }
                (key.clone(), record)
            })
            .collect();
        assert_eq!(
            read(self.leader),
            expected_on_leader,
            "{name}: the leader's copy"
        );
        copy
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    rsn: u64,
    dmaster: String,
    flags: u32,
    value: Vec<u8>,
}

fn header(rsn: u64, dmaster: u32) -> LtdbHeader {
    LtdbHeader {
        rsn,
        dmaster,
        reserved1: 0,
        flags: 0,
    }
}

/// Opens a node's database file the way the daemon does (volatile files use robust mutexes
/// and the jenkins hash when the host supports them).
fn open(path: &Path) -> Tdb {
    let attempts = [
        TdbFlags::MUTEX_LOCKING | TdbFlags::INCOMPATIBLE_HASH,
        TdbFlags::INCOMPATIBLE_HASH,
        TdbFlags::DEFAULT,
    ];
    let mut last = None;
    for flags in attempts {
        match Tdb::open(path, 0, flags, libc::O_RDWR, 0o600) {
            Ok(tdb) => return tdb,
            Err(e) => last = Some(e),
        }
    }
    panic!("cannot open {}: {last:?}", path.display());
}

fn put(path: &Path, key: &[u8], header: LtdbHeader, value: &[u8]) {
    let mut data = header.to_bytes();
    data.extend_from_slice(value);
    open(path)
        .store(key, &data, ctdb::common::tdb::StoreMode::Replace)
        .unwrap();
}

fn read_all(path: &Path, leader: u32) -> BTreeMap<Vec<u8>, Record> {
    let tdb = open(path);
    let mut out = BTreeMap::new();
    tdb.traverse_read(|key, data| {
        let (h, _) = LtdbHeader::pull(data).unwrap();
        out.insert(
            key.to_vec(),
            Record {
                rsn: h.rsn,
                dmaster: if h.dmaster == leader {
                    "L".to_string()
                } else {
                    h.dmaster.to_string()
                },
                flags: h.flags,
                value: data[LTDB_HEADER_LEN..].to_vec(),
            },
        );
        Traverse::Continue
    })
    .unwrap();
    out
}

fn value_of(db: &BTreeMap<Vec<u8>, Record>, key: &str) -> Option<String> {
    db.get(key.as_bytes())
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
}

/// What the recovery rules demand of the volatile and persistent database, after
/// `recoveries` recoveries (each one raises the RSNs by one: the leader's copies, one higher,
/// win the next time).
fn check_expectations(scenario: &Scenario, recoveries: u64) {
    let vol = scenario.contents("vol.tdb");
    assert_eq!(value_of(&vol, "v-high").as_deref(), Some("n1"));
    assert_eq!(vol[b"v-high".as_slice()].rsn, 9 + recoveries - 1);
    assert_eq!(value_of(&vol, "v-gone"), None, "a deleted record came back");
    assert_eq!(value_of(&vol, "v-tie-a").as_deref(), Some("second"));
    assert_eq!(value_of(&vol, "v-tie-b").as_deref(), Some("first"));
    assert_eq!(value_of(&vol, "v-single").as_deref(), Some("only"));
    assert_eq!(value_of(&vol, "w-1").as_deref(), Some("two"));
    assert_eq!(value_of(&vol, "w-2").as_deref(), Some("zero"));
    for (key, record) in &vol {
        assert_eq!(
            record.dmaster,
            "L",
            "{}: dmaster is not the leader",
            String::from_utf8_lossy(key)
        );
        assert_ne!(record.flags & REC_FLAG_MIGRATED_WITH_DATA, 0);
        assert!(!record.value.is_empty());
    }

    let pers = scenario.contents("pers.tdb");
    let keys: Vec<String> = pers
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(
        keys,
        vec!["__db_sequence_number__\0", "p-a", "p-b", "p-only-2"],
        "persistent records"
    );
    assert_eq!(
        pers[SEQNUM_KEY].value,
        100u64.to_ne_bytes().to_vec(),
        "sequence number"
    );
    // Persistent records keep their headers.
    assert_eq!(
        pers[b"p-only-2".as_slice()].dmaster,
        scenario_pnn(2, scenario)
    );
    for pnn in 0..3 {
        let out = scenario.ctdb_ok(pnn, &["pfetch", "pers.tdb", "p-only-2"]);
        assert_eq!(out.trim(), "newest", "pfetch on node {pnn}");
    }
}

fn scenario_pnn(pnn: u32, scenario: &Scenario) -> String {
    if pnn == scenario.leader {
        "L".into()
    } else {
        pnn.to_string()
    }
}

#[test]
fn our_helper_recovers_a_stock_cluster_exactly_like_stocks() {
    let ours = Scenario::start_stock_mode("rechelper-ours", "127.0.101");
    let stock = Scenario::start("rechelper-stock", "127.0.102", Path::new(STOCK_HELPER));
    // Our helper already did the start-up recovery.
    assert!(ours.helper_runs() >= 1);

    for scenario in [&ours, &stock] {
        scenario.populate();
    }
    for scenario in [&ours, &stock] {
        scenario.recover();
    }
    let log = (0..3)
        .map(|pnn| {
            std::fs::read_to_string(ours.cluster.node_base(pnn).join("log.ctdb"))
                .unwrap_or_default()
        })
        .collect::<String>();
    assert!(log.contains("ctdb-recovery["), "no helper log lines");
    assert!(log.contains("databases recovered"), "{log}");
    assert!(!log.contains("database recovery failed"), "{log}");

    check_expectations(&ours, 1);
    check_expectations(&stock, 1);
    assert_eq!(ours.contents("vol.tdb"), stock.contents("vol.tdb"));
    assert_eq!(ours.contents("pers.tdb"), stock.contents("pers.tdb"));

    // Run our helper by hand on the leader, the way the recovery daemon does: the result
    // (a host-order int 0) goes to the given fd, the generation becomes the vnn map's.
    let base = ours.cluster.node_base(ours.leader);
    let out = Command::new(our_helper())
        .env("CTDB_RS_RECOVERY_STOCK", "1")
        .args([
            "1",
            base.join("run/ctdbd.socket").to_str().unwrap(),
            "0x1234abcd",
        ])
        .env(
            "CTDB_LOGGING",
            format!("file:{}", base.join("manual.log").display()),
        )
        .env("CTDB_DEBUGLEVEL", "INFO")
        .env("CTDB_DBDIR_STATE", base.join("db/state"))
        .env("CTDB_TEST_MODE", "yes")
        .env("CTDB_BASE", &base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, 0i32.to_ne_bytes());
    let vnnmap = ours.ctdb_ok(ours.leader, &["status"]);
    assert!(vnnmap.contains("Generation:305441741"), "{vnnmap}");
    let manual = std::fs::read_to_string(base.join("manual.log")).unwrap();
    assert!(manual.contains("ctdb-recovery["), "{manual}");
    assert!(manual.contains("recovered event finished"), "{manual}");
    check_expectations(&ours, 2);
    ours.cluster.wait_all_ok(Duration::from_secs(60));
}

#[test]
fn helper_command_line_failures_write_nothing() {
    let run = |args: &[&str]| {
        Command::new(our_helper())
            .args(args)
            .env("CTDB_LOGGING", "file:")
            .env("CTDB_DEBUGLEVEL", "NOTICE")
            .output()
            .unwrap()
    };
    let usage = run(&["1", "/nonexistent"]);
    assert_eq!(usage.status.code(), Some(1));
    assert!(usage.stdout.is_empty());
    assert!(String::from_utf8_lossy(&usage.stderr).contains("Usage:"));

    let bad_generation = run(&["1", "/nonexistent", "-5"]);
    assert_eq!(bad_generation.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_generation.stderr)
        .contains("recovery: unable to initialize generation"));

    let no_daemon = run(&["1", "/nonexistent/ctdbd.socket", "7"]);
    assert_eq!(no_daemon.status.code(), Some(1));
    assert!(
        no_daemon.stdout.is_empty(),
        "nothing may be written on failure"
    );
    assert!(String::from_utf8_lossy(&no_daemon.stderr).contains("ctdb_client_init() failed"));

    let no_logging = Command::new(our_helper())
        .args(["1", "/nonexistent/ctdbd.socket", "7"])
        .env_remove("CTDB_LOGGING")
        .env_remove("CTDB_DEBUGLEVEL")
        .output()
        .unwrap();
    assert_eq!(no_logging.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_logging.stderr)
        .contains("recovery: Unable to initialize logging"));
}

impl Scenario {
    /// The helper's log lines of every node, without timestamps, hosts and pids.
    fn helper_log(&self) -> Vec<String> {
        (0..3)
            .flat_map(|pnn| {
                std::fs::read_to_string(self.cluster.node_base(pnn).join("log.ctdb"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| line.split_once(" ctdb-recovery[")?.1.split_once("]: "))
                    .map(|(_, message)| message.to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A node whose database cannot be frozen (its chain locks are held) makes every attempt
/// time out; after three the helper bans it, exactly as stock's helper does.
#[test]
fn a_node_that_cannot_freeze_gets_banned_like_with_stocks_helper() {
    let ours = Scenario::start("rechelper-ban-ours", "127.0.103", &our_helper());
    let stock = Scenario::start("rechelper-ban-stock", "127.0.104", Path::new(STOCK_HELPER));
    let mut logs = Vec::new();
    for scenario in [&ours, &stock] {
        scenario.ctdb_ok(0, &["attach", "vol.tdb"]);
        scenario
            .cluster
            .wait_for("vol.tdb everywhere", Duration::from_secs(30), || {
                (0..3).all(|pnn| {
                    scenario
                        .cluster
                        .ctdb_stdout(pnn, &["getdbmap"])
                        .contains("name:vol.tdb")
                })
            });
        for pnn in 0..3 {
            scenario.ctdb_ok(pnn, &["setvar", "RecoverTimeout", "2"]);
        }
        let victim = (scenario.leader + 1) % 3;
        let locked = open(&scenario.db_path(victim, "vol.tdb"));
        locked.lockall().unwrap();
        let before = scenario.helper_log().len();
        // `ctdb recover` waits for a recovery that cannot finish while the node is stuck.
        let _ = scenario
            .cluster
            .ctdb(scenario.leader, &["-t", "3", "recover"]);
        scenario
            .cluster
            .wait_for("the victim banned", Duration::from_secs(90), || {
                let rows = scenario.cluster.node_flags(scenario.leader);
                rows.get(victim as usize).and_then(|row| row.get(2)) == Some(&true)
            });
        locked.unlockall().unwrap();
        drop(locked);
        let log: Vec<String> = scenario.helper_log().split_off(before);
        assert!(
            log.contains(&format!("Banning node {victim} for 300 seconds")),
            "{log:#?}"
        );
        logs.push(log);
    }
    // The failed run logs the same lines in the same order with both helpers (one database,
    // so nothing runs in parallel).
    let failed_run = |log: &[String]| -> Vec<String> {
        let start = log
            .iter()
            .position(|l| l == "Set recovery mode to ACTIVE")
            .unwrap();
        let end = log
            .iter()
            .position(|l| l.starts_with("Banning node"))
            .unwrap();
        log[start..=end].to_vec()
    };
    assert_eq!(failed_run(&logs[0]), failed_run(&logs[1]));
    assert!(failed_run(&logs[0]).contains(&"0 of 1 databases recovered".to_string()));
}

/// `ctdb catdb` through `pnn`: the (key, value) pairs listed, as a set (stock lists a record
/// once per node that holds a copy with data).
fn catdb(
    scenario: &Scenario,
    pnn: u32,
    name: &str,
) -> std::collections::BTreeSet<(String, String)> {
    let out = scenario.ctdb_ok(pnn, &["catdb", name]);
    let mut pairs = std::collections::BTreeSet::new();
    let mut key = None;
    for line in out.lines() {
        if line.starts_with("key(") {
            key = line.split_once(" = ").map(|(_, k)| k.to_string());
        } else if line.starts_with("data(") {
            if let (Some(k), Some((_, v))) = (key.take(), line.split_once(" = ")) {
                pairs.insert((k, v.to_string()));
            }
        }
    }
    pairs
}

/// The vnn map's lmasters in hash order, from `ctdb status`.
fn vnnmap(scenario: &Scenario) -> Vec<u32> {
    scenario
        .ctdb_ok(scenario.leader, &["status"])
        .lines()
        .filter_map(|line| line.trim().strip_prefix("hash:"))
        .filter_map(|rest| rest.split_once("lmaster:")?.1.trim().parse().ok())
        .collect()
}

/// Every node's volatile records with data, each key on exactly one node, which must be its
/// lmaster and name itself as dmaster. Key → (node, rsn, value).
fn partitioned_contents(scenario: &Scenario, name: &str) -> BTreeMap<Vec<u8>, (u32, u64, String)> {
    let map = vnnmap(scenario);
    assert_eq!(map.len(), 3, "vnnmap {map:?}");
    let mut all = BTreeMap::new();
    for pnn in 0..3 {
        for (key, record) in read_all(&scenario.db_path(pnn, name), u32::MAX) {
            assert!(
                !record.value.is_empty(),
                "{}: an empty record on node {pnn}",
                String::from_utf8_lossy(&key)
            );
            let lmaster =
                ctdb::protocol::hash::lmaster(ctdb::protocol::hash::ctdb_hash(&key), &map).unwrap();
            assert_eq!(
                lmaster,
                pnn,
                "{}: not at its lmaster",
                String::from_utf8_lossy(&key)
            );
            assert_eq!(
                record.dmaster,
                pnn.to_string(),
                "dmaster is not the lmaster"
            );
            assert_ne!(record.flags & REC_FLAG_MIGRATED_WITH_DATA, 0);
            let value = String::from_utf8_lossy(&record.value).into_owned();
            assert!(
                all.insert(key.clone(), (pnn, record.rsn, value)).is_none(),
                "{}: on two nodes",
                String::from_utf8_lossy(&key)
            );
        }
    }
    all
}

/// Our helper with its extensions on, leading a cluster of stock daemons (which take the
/// partial pushes as they are), next to a cluster recovered by stock's helper: each volatile
/// record ends up once, at its lmaster, with the highest-RSN data; `ctdb catdb` lists the same
/// records as on the stock-helper cluster; records are read and written from every node
/// afterwards; deleted records stay deleted; a second recovery changes no content; the
/// persistent database is recovered exactly like stock's.
#[test]
fn our_partitioned_recovery_serves_the_same_records_as_stocks() {
    let ours = Scenario::start("rechelper-part-ours", "127.0.150", &our_helper());
    let stock = Scenario::start("rechelper-part-stock", "127.0.151", Path::new(STOCK_HELPER));
    for scenario in [&ours, &stock] {
        scenario.populate();
    }
    for scenario in [&ours, &stock] {
        scenario.recover();
    }

    let stock_vol = stock.contents("vol.tdb");
    let first = partitioned_contents(&ours, "vol.tdb");
    let values = |db: &BTreeMap<Vec<u8>, (u32, u64, String)>| -> BTreeMap<Vec<u8>, String> {
        db.iter()
            .map(|(k, (_, _, v))| (k.clone(), v.clone()))
            .collect()
    };
    let stock_values: BTreeMap<Vec<u8>, String> = stock_vol
        .iter()
        .map(|(k, r)| (k.clone(), String::from_utf8_lossy(&r.value).into_owned()))
        .collect();
    assert_eq!(values(&first), stock_values, "the recovered data set");
    assert!(
        !first.contains_key(b"v-gone".as_slice()),
        "a deleted record came back"
    );
    assert_eq!(first[b"v-high".as_slice()].2, "n1");
    assert_eq!(first[b"v-tie-a".as_slice()].2, "second");
    assert_eq!(first[b"v-tie-b".as_slice()].2, "first");
    // The persistent database is stock's.
    assert_eq!(ours.contents("pers.tdb"), stock.contents("pers.tdb"));

    let stock_listing = catdb(&stock, 0, "vol.tdb");
    assert!(!stock_listing.is_empty());
    for pnn in 0..3 {
        assert_eq!(
            catdb(&ours, pnn, "vol.tdb"),
            stock_listing,
            "catdb through node {pnn}"
        );
    }

    // A second recovery right after: same records at the same places, nothing else.
    ours.recover();
    let second = partitioned_contents(&ours, "vol.tdb");
    assert_eq!(values(&second), values(&first));
    for (key, (pnn, _, _)) in &second {
        assert_eq!(*pnn, first[key].0, "{}", String::from_utf8_lossy(key));
    }

    // Reads from every node find the records at their lmasters; writes migrate them.
    for pnn in 0..3 {
        let out = ours.ctdb_ok(pnn, &["readkey", "vol.tdb", "v-high"]);
        assert!(out.contains("ptr:[n1]"), "readkey on node {pnn}: {out}");
        let gone = ours.ctdb_ok(pnn, &["readkey", "vol.tdb", "v-gone"]);
        assert!(
            gone.contains("size:0"),
            "deleted record on node {pnn}: {gone}"
        );
    }
    for pnn in 0..3 {
        let value = format!("written-by-{pnn}");
        ours.ctdb_ok(pnn, &["writekey", "vol.tdb", "v-single", &value]);
        for reader in 0..3 {
            let out = ours.ctdb_ok(reader, &["readkey", "vol.tdb", "v-single"]);
            assert!(
                out.contains(&format!("ptr:[{value}]")),
                "node {reader} after node {pnn} wrote: {out}"
            );
        }
    }
}

/// The same with ctdb-rs daemons: the records end up once, at their lmaster, with the values
/// the recovery rules demand, and every node reads them.
#[test]
fn our_partitioned_recovery_with_our_daemons() {
    let ours = Scenario::start_with(
        "rechelper-part-rs",
        Flavour::Ours,
        "127.0.152",
        &our_helper(),
        "",
    );
    ours.populate();
    ours.recover();
    let got: BTreeMap<String, String> = partitioned_contents(&ours, "vol.tdb")
        .into_iter()
        .map(|(k, (_, _, v))| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect();
    let expected: BTreeMap<String, String> = [
        ("v-high", "n1"),
        ("v-single", "only"),
        ("v-tie-a", "second"),
        ("v-tie-b", "first"),
        ("w-1", "two"),
        ("w-2", "zero"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, expected);
    for pnn in 0..3 {
        let out = ours.ctdb_ok(pnn, &["readkey", "vol.tdb", "w-1"]);
        assert!(out.contains("ptr:[two]"), "readkey on node {pnn}: {out}");
        let gone = ours.ctdb_ok(pnn, &["readkey", "vol.tdb", "v-gone"]);
        assert!(
            gone.contains("size:0"),
            "deleted record on node {pnn}: {gone}"
        );
    }
}

/// Runs `ctdb-bench` (our load tool) and returns its `key=value` output.
fn bench_tool(args: &[&str]) -> BTreeMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ctdb-bench"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctdb-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A volatile database far larger than one DB_PULL step of our daemon (each node holds
/// about 13k records, so every pull is streamed over several event-loop turns and replied to
/// late) is recovered completely by either helper: stock's leaves every record on every
/// node, ours each record once, at its lmaster; no node keeps a stale copy.
#[test]
fn large_databases_are_pulled_in_steps_and_recovered_by_either_helper() {
    const RECORDS: usize = 30_000;
    let cases = [
        ("rechelper-big-ours", "127.0.153", our_helper()),
        (
            "rechelper-big-stock",
            "127.0.154",
            PathBuf::from(STOCK_HELPER),
        ),
    ];
    std::thread::scope(|s| {
        for (name, prefix, helper) in &cases {
            s.spawn(move || {
                let c = Scenario::start_with(name, Flavour::Ours, prefix, helper, "");
                c.ctdb_ok(0, &["attach", "big.tdb"]);
                let paths: Vec<PathBuf> = (0..3).map(|pnn| c.db_path(pnn, "big.tdb")).collect();
                c.cluster
                    .wait_for("big.tdb on every node", Duration::from_secs(30), || {
                        paths.iter().all(|p| p.exists())
                    });
                for (pnn, path) in paths.iter().enumerate() {
                    let path = path.display().to_string();
                    let pnn = pnn.to_string();
                    let records = RECORDS.to_string();
                    bench_tool(&[
                        "fill-volatile",
                        "--db",
                        &path,
                        "--pnn",
                        &pnn,
                        "--nodes",
                        "3",
                        "--records",
                        &records,
                    ]);
                }
                c.recover();
                let counts: Vec<usize> = paths
                    .iter()
                    .map(|path| {
                        let census = bench_tool(&["census", "--db", &path.display().to_string()]);
                        assert_eq!(census["stale"], "0", "{name}: stale copies in {path:?}");
                        census["records"].parse().unwrap()
                    })
                    .collect();
                let everywhere = counts.iter().all(|&n| n == RECORDS);
                let once = counts.iter().sum::<usize>() == RECORDS;
                assert!(everywhere || once, "{name}: records per node {counts:?}");
                // Our helper partitions, stock's does not.
                assert_eq!(once, *name == "rechelper-big-ours", "{name}: {counts:?}");
            });
        }
    });
}
