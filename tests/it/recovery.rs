//! Recovery correctness on real 3-node ctdb-rs clusters while nodes are SIGKILLed and
//! restarted: persistent writes that returned success are never lost and deleted keys never
//! come back; volatile records end up as the highest-RSN copy that survived, and deleted
//! volatile records stay deleted.
//!
//! Which node dies when is drawn from a seeded PRNG; the seed is printed and
//! `CTDB_TEST_SEED=<seed>` replays the same choices.

// A writer thread keeps writing while the test kills nodes; the default seed comes from the
// clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::cluster::{Flavour, LocalCluster, STOCK_CTDB};
use crate::reclock::kill_node;
use ctdb::common::tdb::{Tdb, TdbFlags, Traverse};
use ctdb::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN};
use ctdb::protocol::Marshal;
use ctdb::testing::Prng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn seed() -> u64 {
    let seed = std::env::var("CTDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            u64::from(nanos) ^ u64::from(std::process::id())
        });
    eprintln!("recovery test seed: {seed} (replay with CTDB_TEST_SEED={seed})");
    seed
}

/// The stock CLI against node `pnn`, killed after `secs` (a write to a cluster that is
/// recovering waits for the recovery; one whose node dies may wait for ever).
fn ctdb_timed(c: &LocalCluster, pnn: u32, secs: u32, args: &[&str]) -> Output {
    let base = c.node_base(pnn);
    Command::new("timeout")
        .arg(secs.to_string())
        .arg(STOCK_CTDB)
        .args(args)
        .env("CTDB_TEST_MODE", "yes")
        .env("CTDB_BASE", &base)
        .env("CTDB_SOCKET", base.join("run/ctdbd.socket"))
        .output()
        .unwrap()
}

fn ctdb_ok(c: &LocalCluster, pnn: u32, args: &[&str]) -> String {
    let out = ctdb_timed(c, pnn, 90, args);
    assert!(
        out.status.success(),
        "ctdb {args:?} on node {pnn} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A healthy cluster: every node OK and in normal recovery mode, one leader.
fn wait_healthy(c: &LocalCluster, limit: Duration) {
    c.wait_all_ok(limit);
    c.wait_for("normal mode on every node", limit, || {
        (0..c.nodes).all(|n| {
            let out = ctdb_timed(c, n, 15, &["status"]);
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("Recovery mode:NORMAL")
        })
    });
}

fn started(name: &str, prefix: &str) -> LocalCluster {
    let c = LocalCluster::setup(name, Flavour::Ours, 3, prefix, &[]);
    c.start();
    wait_healthy(&c, Duration::from_secs(90));
    c
}

fn attach(c: &LocalCluster, db: &str, persistent: bool) {
    let mut args = vec!["attach", db];
    if persistent {
        args.push("persistent");
    }
    ctdb_ok(c, 0, &args);
    c.wait_for(
        &format!("{db} on every node"),
        Duration::from_secs(30),
        || (0..3).all(|n| ctdb_ok(c, n, &["getdbmap"]).contains(&format!("name:{db}"))),
    );
}

/// What a key of the persistent database may hold: after a write that returned success only
/// its value (`None`: deleted); a write that failed may or may not have happened, so it adds
/// its value to the possibilities until the next acknowledged write.
#[derive(Default)]
struct Model {
    possible: BTreeMap<String, BTreeSet<Option<String>>>,
    acknowledged: u64,
    failed: u64,
}

impl Model {
    fn record(&mut self, key: &str, value: Option<String>, ok: bool) {
        let entry = self
            .possible
            .entry(key.to_string())
            .or_insert_with(|| BTreeSet::from([None]));
        if ok {
            entry.clear();
            self.acknowledged += 1;
        } else {
            self.failed += 1;
        }
        entry.insert(value);
    }
}

/// A persistent write through node `pnn`: one `pstore`, `pdelete` or `ptrans` of two keys.
fn persistent_write(c: &LocalCluster, rng: &mut Prng, step: u64, pnn: u32, model: &Mutex<Model>) {
    let key = |rng: &mut Prng| format!("k{}", rng.below(8));
    let value = format!("v{step}-n{pnn}");
    match rng.below(10) {
        0..=5 => {
            let k = key(rng);
            let ok = ctdb_timed(c, pnn, 30, &["pstore", "pers.tdb", &k, &value])
                .status
                .success();
            model.lock().unwrap().record(&k, Some(value), ok);
        }
        6..=7 => {
            let k = key(rng);
            let ok = ctdb_timed(c, pnn, 30, &["pdelete", "pers.tdb", &k])
                .status
                .success();
            model.lock().unwrap().record(&k, None, ok);
        }
        _ => {
            let (k1, k2) = (key(rng), key(rng));
            if k1 == k2 {
                return;
            }
            let file = c.dir().join(format!("ptrans-{step}"));
            std::fs::write(
                &file,
                format!("\"{k1}\" \"{value}-a\"\n\"{k2}\" \"{value}-b\"\n"),
            )
            .unwrap();
            let ok = ctdb_timed(c, pnn, 30, &["ptrans", "pers.tdb", file.to_str().unwrap()])
                .status
                .success();
            let mut model = model.lock().unwrap();
            model.record(&k1, Some(format!("{value}-a")), ok);
            model.record(&k2, Some(format!("{value}-b")), ok);
        }
    }
}

#[test]
fn acknowledged_persistent_writes_survive_kills_and_deleted_keys_stay_deleted() {
    let seed = seed();
    let c = Arc::new(started("recovery-pers", "127.0.118"));
    attach(&c, "pers.tdb", true);
    let model = Arc::new(Mutex::new(Model::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // The writer goes round the nodes while the main thread kills and restarts them; a write
    // to a dead node fails (and counts as "may have happened", which it did not).
    let writer = {
        let (c, model, stop) = (c.clone(), model.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Prng::new(seed ^ 0x5752_4954);
            let mut step = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let pnn = (step % 3) as u32;
                if c.pid(pnn).is_some() {
                    persistent_write(&c, &mut rng, step, pnn, &model);
                }
                step += 1;
            }
        })
    };

    let mut rng = Prng::new(seed);
    let mut victims = Vec::new();
    for round in 0..4 {
        // Let some writes land, then kill a node in the middle of the traffic.
        let before = model.lock().unwrap().acknowledged;
        c.wait_for(
            &format!("round {round}: writes before the kill"),
            Duration::from_secs(120),
            || model.lock().unwrap().acknowledged >= before + 3,
        );
        let victim = rng.below(3) as u32;
        victims.push(victim);
        kill_node(&c, victim);
        // Writes through the survivors must go on (after the recovery the kill causes).
        let before = model.lock().unwrap().acknowledged;
        c.wait_for(
            &format!("round {round}: writes with node {victim} dead"),
            Duration::from_secs(120),
            || model.lock().unwrap().acknowledged >= before + 3,
        );
        c.start_node(victim);
        c.wait_connected(Duration::from_secs(60));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    wait_healthy(&c, Duration::from_secs(120));

    // Deletions and a write that one node misses while it is dead: when it comes back with
    // its stale copy (a lower sequence number), the recovery must not bring the deleted keys
    // back nor lose the write.
    let absent = rng.below(3) as u32;
    let writer_node = (absent + 1) % 3;
    kill_node(&c, absent);
    let mut model_now = model.lock().unwrap();
    for (key, value) in [("k0", None), ("k1", None), ("late", Some("while-down"))] {
        let mut args = match value {
            Some(v) => vec!["pstore", "pers.tdb", key, v],
            None => vec!["pdelete", "pers.tdb", key],
        };
        args.insert(0, "60");
        args.insert(0, "-T");
        c.wait_for(
            &format!("{args:?} through node {writer_node} with node {absent} dead"),
            Duration::from_secs(120),
            || ctdb_timed(&c, writer_node, 90, &args).status.success(),
        );
        model_now.record(key, value.map(str::to_string), true);
    }
    drop(model_now);
    c.start_node(absent);
    wait_healthy(&c, Duration::from_secs(120));
    ctdb_ok(&c, 0, &["recover"]);
    wait_healthy(&c, Duration::from_secs(120));

    let model = model.lock().unwrap();
    eprintln!(
        "seed {seed}: killed {victims:?} during the writes, then {absent}; {} acknowledged writes, {} failed",
        model.acknowledged, model.failed
    );
    let deleted = model
        .possible
        .values()
        .filter(|p| p.len() == 1 && p.contains(&None))
        .count();
    let exact = model.possible.values().filter(|p| p.len() == 1).count();
    eprintln!(
        "{} keys: {exact} with one possible value, {deleted} of them deleted",
        model.possible.len()
    );
    assert!(model.acknowledged >= 20, "enough writes were acknowledged");
    for pnn in 0..3 {
        for (key, possible) in &model.possible {
            let out = ctdb_timed(&c, pnn, 30, &["pfetch", "pers.tdb", key]);
            assert!(out.status.success(), "pfetch {key} on node {pnn}");
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let found = (!text.is_empty()).then_some(text);
            assert!(
                possible.contains(&found),
                "seed {seed}: node {pnn} has {key} = {found:?}, expected one of {possible:?}"
            );
        }
    }
}

/// A volatile record as a node's local file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Copy {
    rsn: u64,
    value: Vec<u8>,
}

fn db_path(c: &LocalCluster, pnn: u32, db: &str) -> PathBuf {
    c.node_base(pnn).join(format!("db/volatile/{db}.{pnn}"))
}

/// Every record of a node's volatile database file (read-only, beside the running daemon).
fn local_copies(path: &Path) -> BTreeMap<String, Copy> {
    let attempts = [
        TdbFlags::MUTEX_LOCKING | TdbFlags::INCOMPATIBLE_HASH,
        TdbFlags::INCOMPATIBLE_HASH,
        TdbFlags::DEFAULT,
    ];
    let tdb = attempts
        .iter()
        .find_map(|&flags| Tdb::open(path, 0, flags, libc::O_RDWR, 0o600).ok())
        .unwrap_or_else(|| panic!("cannot open {}", path.display()));
    let mut out = BTreeMap::new();
    tdb.traverse_read(|key, data| {
        if let Ok((header, _)) = LtdbHeader::pull(data) {
            out.insert(
                String::from_utf8_lossy(key).into_owned(),
                Copy {
                    rsn: header.rsn,
                    value: data.get(LTDB_HEADER_LEN..).unwrap_or_default().to_vec(),
                },
            );
        }
        Traverse::Continue
    })
    .unwrap();
    out
}

/// The generation node `pnn` reports, `None` while it does not answer.
fn generation(c: &LocalCluster, pnn: u32) -> Option<String> {
    let out = ctdb_timed(c, pnn, 15, &["status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Generation:").map(str::to_string))
}

/// The value `ctdb readkey` returns, `None` for an absent or deleted record.
fn readkey(c: &LocalCluster, pnn: u32, key: &str) -> Option<String> {
    // An attach waits while a recovery runs; give it more than the CLI's 10 s.
    let out = ctdb_ok(c, pnn, &["-T", "60", "readkey", "vol.tdb", key]);
    // "Data: size:5 ptr:[value]"
    let start = out.find("ptr:[")? + 5;
    let end = out.rfind(']')?;
    let value = &out[start..end];
    (!value.is_empty()).then(|| value.to_string())
}

/// The copy with the highest RSN among `nodes`' files; `Err` when two copies tie with
/// different values (the recovery may then take either).
fn highest(
    snapshots: &BTreeMap<u32, BTreeMap<String, Copy>>,
    key: &str,
) -> Result<Option<String>, BTreeSet<Option<String>>> {
    let copies: Vec<&Copy> = snapshots.values().filter_map(|s| s.get(key)).collect();
    let Some(top) = copies.iter().map(|c| c.rsn).max() else {
        return Ok(None);
    };
    let values: BTreeSet<Option<String>> = copies
        .iter()
        .filter(|c| c.rsn == top)
        .map(|c| (!c.value.is_empty()).then(|| String::from_utf8_lossy(&c.value).into_owned()))
        .collect();
    if values.len() == 1 {
        Ok(values.into_iter().next().unwrap())
    } else {
        Err(values)
    }
}

#[test]
fn volatile_records_take_the_highest_surviving_copy_and_deletions_stick() {
    let seed = seed();
    let mut rng = Prng::new(seed);
    let c = started("recovery-vol", "127.0.119");
    attach(&c, "vol.tdb", false);

    for round in 0..3 {
        // Writes migrate records between nodes (each migration raises the RSN); a few keys
        // are then deleted through one node that survives the round.
        let deleter = rng.below(3) as u32;
        let mut last_write = BTreeMap::new();
        for step in 0..24 {
            let key = format!("key{}", rng.below(8));
            let pnn = rng.below(3) as u32;
            let value = format!("r{round}-s{step}-n{pnn}");
            ctdb_ok(&c, pnn, &["writekey", "vol.tdb", &key, &value]);
            last_write.insert(key, Some(value));
        }
        let mut deleted = BTreeSet::new();
        for _ in 0..3 {
            let key = format!("key{}", rng.below(8));
            ctdb_ok(&c, deleter, &["deletekey", "vol.tdb", &key]);
            last_write.insert(key.clone(), None);
            deleted.insert(key);
        }
        // Before any kill, every node reads the last write.
        for (key, value) in &last_write {
            let pnn = rng.below(3) as u32;
            assert_eq!(&readkey(&c, pnn, key), value, "seed {seed}: {key} on {pnn}");
        }

        // Kill one node other than the deleter; the survivors' files (quiet now) say what
        // the recovery must produce.
        let victim = (deleter + 1 + rng.below(2) as u32) % 3;
        let survivors: Vec<u32> = (0..3).filter(|&n| n != victim).collect();
        let snapshots: BTreeMap<u32, BTreeMap<String, Copy>> = survivors
            .iter()
            .map(|&n| (n, local_copies(&db_path(&c, n, "vol.tdb"))))
            .collect();
        // Keys whose newest copy dies with the victim fall back to an older surviving copy.
        let fallen_back = last_write
            .iter()
            .filter(|(key, value)| highest(&snapshots, key).as_ref() != Ok(*value))
            .count();
        eprintln!(
            "seed {seed} round {round}: deleter {deleter}, killing node {victim}; \
             {fallen_back} of {} keys fall back to an older copy",
            last_write.len()
        );
        let before = generation(&c, survivors[0]);
        kill_node(&c, victim);
        // The survivors ran the recovery the kill causes (a new generation) and are back in
        // normal mode with one leader.
        c.wait_for("the survivors to recover", Duration::from_secs(90), || {
            let after: Vec<Option<String>> = survivors.iter().map(|&n| generation(&c, n)).collect();
            after[0].is_some()
                && after[0] != before
                && after.iter().all(|g| g == &after[0])
                && survivors.iter().all(|&n| {
                    let text = String::from_utf8_lossy(&ctdb_timed(&c, n, 15, &["status"]).stdout)
                        .into_owned();
                    text.contains("Recovery mode:NORMAL")
                })
        });
        let check = |readers: &[u32], what: &str| {
            for key in last_write.keys() {
                let expected = highest(&snapshots, key);
                for &pnn in readers {
                    let found = readkey(&c, pnn, key);
                    match &expected {
                        Ok(value) => assert_eq!(
                            &found, value,
                            "seed {seed} round {round} {what}: {key} on node {pnn}"
                        ),
                        Err(tied) => assert!(
                            tied.contains(&found),
                            "seed {seed} round {round} {what}: {key} on node {pnn} is \
                             {found:?}, not one of the tied copies {tied:?}"
                        ),
                    }
                }
                if deleted.contains(key) {
                    for &pnn in readers {
                        assert_eq!(
                            readkey(&c, pnn, key),
                            None,
                            "seed {seed} round {round} {what}: deleted {key} came back on {pnn}"
                        );
                    }
                }
            }
        };
        check(&survivors, "with a node dead");

        c.start_node(victim);
        wait_healthy(&c, Duration::from_secs(120));
        ctdb_ok(&c, 0, &["recover"]);
        wait_healthy(&c, Duration::from_secs(120));
        check(&[0, 1, 2], "after the restart and a recovery");
    }
}
