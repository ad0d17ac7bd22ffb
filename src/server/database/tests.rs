use super::*;
use crate::common::tdb::{self, StoreMode, Tdb};
use crate::protocol::hash;
use crate::protocol::ltdb::{
    LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_AUTOMATIC, REC_FLAG_MIGRATED_WITH_DATA,
    REC_RO_HAVE_DELEGATIONS, REC_RO_HAVE_READONLY,
};
use crate::protocol::packet::CTRL_FLAG_ATTACH_RECOVERY;
use crate::protocol::types::{node_flags, PulldbExt, RecBuffer, RecData, Transdb};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

// ---- fixtures -----------------------------------------------------------------------------

/// A per-test scratch directory with the three database directories, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ctdb-rs-db-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["volatile", "persistent", "state"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Self(dir)
    }

    pub(super) fn config(&self, pnn: Pnn) -> DbConfig {
        DbConfig {
            pnn,
            volatile_dir: self.0.join("volatile"),
            persistent_dir: self.0.join("persistent"),
            state_dir: self.0.join("state"),
            tdb_mutexes: true,
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// In-memory paths look like real ones but touch nothing.
fn memory_config(pnn: Pnn) -> DbConfig {
    DbConfig {
        pnn,
        volatile_dir: PathBuf::from("/mem/volatile"),
        persistent_dir: PathBuf::from("/mem/persistent"),
        state_dir: PathBuf::from("/mem/state"),
        tdb_mutexes: true,
    }
}

/// The daemon state the database controls look at.
struct Env {
    vnn_map: VnnMap,
    tunables: Tunables,
    recovery_mode: u32,
    runstate: Runstate,
    own_flags: u32,
    healthy_nodes: u32,
}

impl Env {
    fn new() -> Self {
        Env {
            vnn_map: VnnMap {
                generation: 7,
                map: vec![0, 1],
            },
            tunables: Tunables::default(),
            recovery_mode: RECOVERY_NORMAL,
            runstate: Runstate::Running,
            own_flags: 0,
            healthy_nodes: 2,
        }
    }

    fn ctx(&self) -> DbContext<'_> {
        DbContext {
            recovery_mode: self.recovery_mode,
            runstate: self.runstate,
            own_flags: self.own_flags,
            vnn_map: &self.vnn_map,
            tunables: &self.tunables,
            healthy_nodes: self.healthy_nodes,
            active_nodes: 3,
        }
    }

    fn set_tunable(&mut self, name: &str, value: u32) {
        self.tunables.set(name, value).unwrap();
    }
}

const T0: Instant = Instant::ZERO;
const LOCAL_CLIENT: ClientId = 5;

fn request(opcode: ControlOpcode, data: &[u8]) -> DbRequest<'_> {
    DbRequest {
        opcode,
        srvid: 0,
        flags: 0,
        data,
        srcnode: 1,
        client: None,
    }
}

fn outcome(
    dbs: &mut DatabaseSet,
    env: &Env,
    opcode: ControlOpcode,
    data: &[u8],
) -> DbControlOutcome {
    dbs.handle_control(T0, &request(opcode, data), &env.ctx())
}

/// Runs a control that must reply at once.
fn control(dbs: &mut DatabaseSet, env: &Env, opcode: ControlOpcode, data: &[u8]) -> DbReply {
    match outcome(dbs, env, opcode, data) {
        DbControlOutcome::Reply(reply) => reply,
        other => panic!("{} did not reply at once: {other:?}", opcode.name()),
    }
}

fn ok(dbs: &mut DatabaseSet, env: &Env, opcode: ControlOpcode, data: &[u8]) -> Vec<u8> {
    let reply = control(dbs, env, opcode, data);
    assert_eq!(reply.status, 0, "{} failed: {reply:?}", opcode.name());
    reply.data
}

fn fails(dbs: &mut DatabaseSet, env: &Env, opcode: ControlOpcode, data: &[u8]) {
    let reply = control(dbs, env, opcode, data);
    assert_eq!(reply.status, -1, "{} should fail: {reply:?}", opcode.name());
}

fn effects(dbs: &mut DatabaseSet) -> Vec<DbEffect> {
    std::iter::from_fn(|| dbs.poll_effect()).collect()
}

fn u32_of(data: &[u8]) -> u32 {
    u32::from_ne_bytes(data.try_into().unwrap())
}

fn name_data(name: &str) -> Vec<u8> {
    nul_terminated(name.as_bytes())
}

fn attach(dbs: &mut DatabaseSet, env: &Env, opcode: ControlOpcode, name: &str) -> u32 {
    let db_id = u32_of(&ok(dbs, env, opcode, &name_data(name)));
    effects(dbs);
    db_id
}

fn transdb(db_id: u32, tid: u32) -> Vec<u8> {
    Transdb { db_id, tid }.to_bytes()
}

fn pulldb(db_id: u32, srvid: u64) -> Vec<u8> {
    PulldbExt {
        db_id,
        lmaster: crate::protocol::types::LMASTER_ANY,
        srvid,
    }
    .to_bytes()
}

fn header(rsn: u64, dmaster: u32, flags: u32) -> LtdbHeader {
    LtdbHeader {
        rsn,
        dmaster,
        reserved1: 0,
        flags,
    }
}

fn libtdb_set(tag: &str, pnn: Pnn) -> (TempDir, DatabaseSet) {
    let dir = TempDir::new(tag);
    let dbs = DatabaseSet::new(dir.config(pnn), Box::new(TdbBackend)).unwrap();
    (dir, dbs)
}

fn memory_set(pnn: Pnn) -> (MemoryBackend, DatabaseSet) {
    let backend = MemoryBackend::new();
    let dbs = DatabaseSet::new(memory_config(pnn), Box::new(backend.clone())).unwrap();
    (backend, dbs)
}

/// Every record of a real TDB file as the stock `tdbdump` prints it (decoded), so the files
/// are read by a process other than the one holding them open.
pub(super) fn tdbdump(path: &Path) -> Records {
    let out = Command::new("tdbdump")
        .arg(path)
        .output()
        .expect("tdbdump (Debian package tdb-tools) must be installed");
    assert!(out.status.success(), "tdbdump {}: {out:?}", path.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut records = Vec::new();
    let mut key = None;
    for line in text.lines() {
        let Some((tag, quoted)) = line.split_once(" = ") else {
            continue;
        };
        let bytes = decode_tdbdump(quoted.trim_matches('"'));
        if tag.starts_with("key(") {
            key = Some(bytes);
        } else if tag.starts_with("data(") {
            records.push((key.take().unwrap(), bytes));
        }
    }
    records.sort();
    records
}

fn decode_tdbdump(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn value_with_header(h: &LtdbHeader, data: &[u8]) -> Vec<u8> {
    let mut v = h.to_bytes();
    v.extend_from_slice(data);
    v
}

// ---- another process touching the same file ----------------------------------------------

const CHILD_ENV: &str = "CTDB_RS_DB_TEST_CHILD";

/// The body of the helper process the lock tests start (this test binary, filtered to this
/// test). Run as an ordinary test it does nothing. With `CTDB_RS_DB_TEST_CHILD` set to
/// `<tdb flags> <probe|hold> <key> <path>` it opens the file as smbd would and either reports
/// whether `tdb_chainlock_nonblock` on `key` succeeds (`probe`), or takes that chain lock,
/// says `CHILD-READY` and keeps it until its stdin is closed (`hold`).
#[test]
fn lock_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(4, ' ');
    let flags: u32 = parts.next().unwrap().parse().unwrap();
    let action = parts.next().unwrap().to_owned();
    let key = parts.next().unwrap().to_owned();
    let path = parts.next().unwrap();
    let tdb = Tdb::open(path, 0, TdbFlags::from_bits(flags), libc::O_RDWR, 0o600).unwrap();
    if action == "probe" {
        match tdb.chainlock_nonblock(key.as_bytes()) {
            Ok(()) => {
                println!("PROBE-LOCKED");
                tdb.chainunlock(key.as_bytes()).unwrap();
            }
            Err(e) if e.is_lock_failure() => println!("PROBE-BUSY"),
            Err(e) => println!("PROBE-ERROR {e}"),
        }
    } else {
        tdb.chainlock(key.as_bytes()).unwrap();
        println!("CHILD-READY");
        std::io::stdout().flush().unwrap();
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
        tdb.chainunlock(key.as_bytes()).unwrap();
    }
    std::io::stdout().flush().unwrap();
    drop(tdb);
}

fn child_command(path: &Path, flags: u32, action: &str, key: &str) -> Command {
    let test_name = format!("{}::lock_child", module_path!().split_once("::").unwrap().1);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([&test_name, "--exact", "--nocapture"]).env(
        CHILD_ENV,
        format!("{flags} {action} {key} {}", path.display()),
    );
    cmd
}

/// What another process gets from `tdb_chainlock_nonblock(key)` right now.
fn probe(path: &Path, flags: u32, key: &str) -> &'static str {
    let out = child_command(path, flags, "probe", key)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("PROBE-LOCKED") {
        "locked"
    } else if text.contains("PROBE-BUSY") {
        "busy"
    } else {
        panic!("probe failed: {text}")
    }
}

/// Another process holding a chain lock until dropped.
pub(super) struct ChainHolder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ChainHolder {
    pub(super) fn start(path: &Path, flags: u32, key: &str) -> Self {
        let mut child = child_command(path, flags, "hold", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "holder died");
            // libtest may print the test name on the same line first.
            if line.trim_end().ends_with("CHILD-READY") {
                break;
            }
        }
        ChainHolder {
            child,
            stdin,
            stdout,
        }
    }
}

impl Drop for ChainHolder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        let _ = self.stdout.read_to_end(&mut rest);
        let _ = self.child.wait();
    }
}

/// `tdbdump -k` finds a key through the file's hash function: for volatile files that must be
/// the jenkins hash smbd uses.
fn tdbdump_key(path: &Path, key: &str) -> Option<Vec<u8>> {
    let out = Command::new("tdbdump")
        .arg("-k")
        .arg(key)
        .arg(path)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| decode_tdbdump(&String::from_utf8_lossy(&out.stdout)))
}

/// Fields of the on-disk `struct tdb_header`.
struct FileHeader {
    hash_size: u32,
    feature_flags: u32,
}

fn file_header(path: &Path) -> FileHeader {
    // Read by another process: closing a descriptor of the file in this one would drop this
    // process's fcntl locks on it (the CLEAR_IF_FIRST active lock among them).
    let out = Command::new("head")
        .args(["-c", "68"])
        .arg(path)
        .output()
        .unwrap();
    let bytes = out.stdout;
    let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    FileHeader {
        hash_size: word(36),
        feature_flags: word(60),
    }
}

// ---- attach ------------------------------------------------------------------------------

#[test]
fn db_ids_of_golden_names() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    for (name, expected) in [
        ("test.tdb", 0xc445_c6ab_u32),
        ("locking.tdb", 0x7a19_d84d),
        ("brlock.tdb", 0x4e66_c2b2),
        ("g_lock.tdb", 0x4d2a_432b),
        ("smbXsrv_open_global.tdb", 0x66f7_1b8c),
    ] {
        assert_eq!(
            attach(&mut dbs, &env, ControlOpcode::DbAttach, name),
            expected,
            "{name}"
        );
    }
    for (name, expected) in [
        ("secrets.tdb", 0x7132_c184_u32),
        ("registry.tdb", 0x6cf2_837d),
    ] {
        let id = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, name);
        assert_eq!(id, expected, "{name}");
    }
}

#[test]
fn attach_of_each_kind_creates_the_right_file_with_the_right_flags() {
    let (dir, mut dbs) = libtdb_set("kinds", 2);
    let env = Env::new();
    let mutexes = tdb::robust_mutexes_supported();
    let cases = [
        (
            ControlOpcode::DbAttach,
            "vol.tdb",
            "volatile",
            0u8,
            if mutexes { 0x1c41 } else { 0xc41 },
        ),
        (
            ControlOpcode::DbAttachPersistent,
            "per.tdb",
            "persistent",
            db_flags::PERSISTENT,
            0x400,
        ),
        (
            ControlOpcode::DbAttachReplicated,
            "rep.tdb",
            "volatile",
            db_flags::REPLICATED,
            0xc41,
        ),
    ];
    for (opcode, name, subdir, flags, open_flags) in cases {
        let db_id = u32_of(&ok(&mut dbs, &env, opcode, &name_data(name)));
        assert_eq!(db_id, hash::db_id(name));
        let path = dir.0.join(subdir).join(format!("{name}.2"));
        assert!(path.exists(), "{}", path.display());

        let reply = ok(
            &mut dbs,
            &env,
            ControlOpcode::Getdbpath,
            &db_id.to_ne_bytes(),
        );
        assert_eq!(reply, nul_terminated(path.as_os_str().as_encoded_bytes()));
        let reply = ok(
            &mut dbs,
            &env,
            ControlOpcode::GetDbname,
            &db_id.to_ne_bytes(),
        );
        assert_eq!(reply, name_data(name));
        let reply = ok(
            &mut dbs,
            &env,
            ControlOpcode::DbOpenFlags,
            &db_id.to_ne_bytes(),
        );
        assert_eq!(u32_of(&reply), open_flags, "{name}");
        assert_eq!(dbs.get(db_id).unwrap().flags(), flags);
        assert_eq!(dbs.get(db_id).unwrap().generation(), 7);

        // Every attach is announced to all connected nodes with the same payload.
        assert_eq!(
            effects(&mut dbs),
            vec![DbEffect::BroadcastControl {
                opcode,
                data: name_data(name)
            }]
        );

        let on_disk = file_header(&path);
        assert_eq!(on_disk.hash_size, 100_001, "DatabaseHashSize");
        let has_mutexes = on_disk.feature_flags & 1 != 0;
        assert_eq!(has_mutexes, open_flags & 0x1000 != 0, "{name}");

        // A record written through our handle, read back by stock tdbdump (through the hash
        // for the key lookup) and checked by tdbtool.
        let value = value_with_header(&header(1, 2, 0), b"payload");
        dbs.get_mut(db_id)
            .unwrap()
            .store_mut()
            .store(b"somekey", &[&value])
            .unwrap();
        assert_eq!(
            tdbdump_key(&path, "somekey").as_deref(),
            Some(&value[..]),
            "{name}"
        );
        let status = Command::new("tdbtool")
            .arg(&path)
            .arg("check")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tdbtool check {name}");
    }

    // GET_DBMAP: newest first, with the kind flags.
    let map = DbidMap::from_bytes_exact(&ok(&mut dbs, &env, ControlOpcode::GetDbmap, &[])).unwrap();
    let got: Vec<(u32, u8)> = map.dbs.iter().map(|d| (d.db_id, d.flags)).collect();
    assert_eq!(
        got,
        vec![
            (hash::db_id("rep.tdb"), db_flags::REPLICATED),
            (hash::db_id("per.tdb"), db_flags::PERSISTENT),
            (hash::db_id("vol.tdb"), 0),
        ]
    );
    fails(&mut dbs, &env, ControlOpcode::GetDbmap, &[0]);
    fails(
        &mut dbs,
        &env,
        ControlOpcode::GetDbname,
        &0x1234u32.to_ne_bytes(),
    );
    fails(&mut dbs, &env, ControlOpcode::Getdbpath, &[1, 2]);
}

#[test]
fn tdb_flags_by_kind() {
    let volatile = db_tdb_flags(0, true, true).bits();
    assert_eq!(
        volatile, 0x1c41,
        "what stock reports for a volatile database"
    );
    assert_eq!(db_tdb_flags(0, false, true).bits(), 0xc41);
    assert_eq!(db_tdb_flags(0, true, false).bits(), 0xc41);
    assert_eq!(db_tdb_flags(db_flags::REPLICATED, true, true).bits(), 0xc41);
    assert_eq!(db_tdb_flags(db_flags::PERSISTENT, true, true).bits(), 0x400);
}

#[test]
fn reattach_and_flag_mismatches() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "a.tdb");
    // Again: same id, nothing announced.
    assert_eq!(
        u32_of(&ok(
            &mut dbs,
            &env,
            ControlOpcode::DbAttach,
            &name_data("a.tdb")
        )),
        id
    );
    assert!(effects(&mut dbs).is_empty());
    // A volatile database cannot be re-attached as persistent, but the reverse is allowed
    // (stock only checks that the requested flags are a subset).
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbAttachPersistent,
        &name_data("a.tdb"),
    );
    let pid = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    assert_eq!(
        u32_of(&ok(
            &mut dbs,
            &env,
            ControlOpcode::DbAttach,
            &name_data("p.tdb")
        )),
        pid
    );
    // The name ends at the first NUL; an empty one is refused.
    assert_eq!(
        u32_of(&ok(&mut dbs, &env, ControlOpcode::DbAttach, b"a.tdb\0junk")),
        id
    );
    fails(&mut dbs, &env, ControlOpcode::DbAttach, b"");
    fails(&mut dbs, &env, ControlOpcode::DbAttach, b"\0");
    assert_eq!(dbs.len(), 2);
}

#[test]
fn attach_rules_for_clients_and_recovery() {
    let (_backend, mut dbs) = memory_set(0);
    let mut env = Env::new();
    let local = |data: &[u8], flags: u32| DbRequest {
        opcode: ControlOpcode::DbAttach,
        srvid: 0,
        flags,
        data: &data.to_vec().leak()[..],
        srcnode: 0,
        client: Some(LOCAL_CLIENT),
    };
    let immediate = |o: DbControlOutcome| match o {
        DbControlOutcome::Reply(r) => r,
        other => panic!("expected a reply: {other:?}"),
    };

    // ATTACH_RECOVERY from a local client outside recovery: refused.
    let r = dbs.handle_control(
        T0,
        &local(&name_data("x.tdb"), CTRL_FLAG_ATTACH_RECOVERY),
        &env.ctx(),
    );
    assert_eq!(immediate(r).status, -1);

    // During recovery the flag lets the recovery helper attach at once ...
    env.recovery_mode = RECOVERY_ACTIVE;
    let r = dbs.handle_control(
        T0,
        &local(&name_data("x.tdb"), CTRL_FLAG_ATTACH_RECOVERY),
        &env.ctx(),
    );
    assert_eq!(immediate(r).status, 0);
    // ... and another node's attach is never held back ...
    assert_eq!(
        ok(&mut dbs, &env, ControlOpcode::DbAttach, &name_data("y.tdb")).len(),
        4
    );
    effects(&mut dbs);
    // ... but an ordinary client waits.
    let DbControlOutcome::Deferred(id) =
        dbs.handle_control(T0, &local(&name_data("z.tdb"), 0), &env.ctx())
    else {
        panic!("not deferred")
    };
    assert!(dbs.by_name("z.tdb").is_none());
    assert_eq!(dbs.deferred_attach_count(), 1);
    assert_eq!(
        dbs.poll_timeout(),
        Some(Instant::from_secs(120)),
        "DeferredAttachTO"
    );

    // The recovery ends: one second later the attach runs again and answers.
    env.recovery_mode = RECOVERY_NORMAL;
    let end = Instant::from_secs(30);
    dbs.process_deferred_attaches(end);
    assert_eq!(dbs.poll_timeout(), Some(Instant::from_secs(31)));
    dbs.handle_timeout(Instant::from_secs(30), &env.ctx());
    assert!(effects(&mut dbs).is_empty());
    dbs.handle_timeout(Instant::from_secs(31), &env.ctx());
    assert_eq!(
        effects(&mut dbs),
        vec![
            DbEffect::BroadcastControl {
                opcode: ControlOpcode::DbAttach,
                data: name_data("z.tdb")
            },
            DbEffect::Complete {
                id,
                reply: DbReply::data(hash::db_id("z.tdb").to_ne_bytes().to_vec())
            },
        ]
    );
    assert_eq!(dbs.deferred_attach_count(), 0);

    // Before STARTUP clients wait too; unanswered, they fail after DeferredAttachTO.
    env.runstate = Runstate::FirstRecovery;
    env.set_tunable("DeferredAttachTO", 10);
    let DbControlOutcome::Deferred(id) =
        dbs.handle_control(T0, &local(&name_data("w.tdb"), 0), &env.ctx())
    else {
        panic!("not deferred")
    };
    dbs.handle_timeout(Instant::from_secs(9), &env.ctx());
    assert!(effects(&mut dbs).is_empty());
    dbs.handle_timeout(Instant::from_secs(10), &env.ctx());
    assert_eq!(
        effects(&mut dbs),
        vec![DbEffect::Complete {
            id,
            reply: DbReply::status(-1)
        }]
    );

    // Recovery again before the re-injection: the attach is deferred again, same id.
    env.runstate = Runstate::Running;
    env.recovery_mode = RECOVERY_ACTIVE;
    let DbControlOutcome::Deferred(id) =
        dbs.handle_control(T0, &local(&name_data("v.tdb"), 0), &env.ctx())
    else {
        panic!("not deferred")
    };
    dbs.process_deferred_attaches(Instant::from_secs(1));
    dbs.handle_timeout(Instant::from_secs(2), &env.ctx());
    assert!(effects(&mut dbs).is_empty());
    assert_eq!(dbs.deferred_attach_count(), 1);
    env.recovery_mode = RECOVERY_NORMAL;
    dbs.process_deferred_attaches(Instant::from_secs(3));
    dbs.handle_timeout(Instant::from_secs(4), &env.ctx());
    let got = effects(&mut dbs);
    assert!(
        got.contains(&DbEffect::Complete {
            id,
            reply: DbReply::data(hash::db_id("v.tdb").to_ne_bytes().to_vec())
        }),
        "{got:?}"
    );

    // A client that goes away takes its deferred attach with it.
    env.recovery_mode = RECOVERY_ACTIVE;
    assert!(matches!(
        dbs.handle_control(T0, &local(&name_data("u.tdb"), 0), &env.ctx()),
        DbControlOutcome::Deferred(_)
    ));
    dbs.on_client_closed(LOCAL_CLIENT);
    assert_eq!(dbs.deferred_attach_count(), 0);
    assert_eq!(dbs.poll_timeout(), None);

    // An inactive node refuses local attaches (remote ones still work).
    env.recovery_mode = RECOVERY_NORMAL;
    env.own_flags = node_flags::STOPPED;
    let r = dbs.handle_control(T0, &local(&name_data("t.tdb"), 0), &env.ctx());
    assert_eq!(immediate(r).status, -1);
    ok(&mut dbs, &env, ControlOpcode::DbAttach, &name_data("t.tdb"));

    // AllowClientDBAttach=0 refuses everybody.
    env.own_flags = 0;
    env.set_tunable("AllowClientDBAttach", 0);
    fails(&mut dbs, &env, ControlOpcode::DbAttach, &name_data("s.tdb"));
}

#[test]
fn persistent_databases_are_found_at_start_up() {
    let dir = TempDir::new("scan");
    let persistent = dir.0.join("persistent");
    for file in [
        "secrets.tdb.1",
        "registry.tdb.1",
        "other.tdb.0",
        "bad.tdb.1x",
        "notes.txt",
        "zero.tdb.01",
    ] {
        let tdb = Tdb::open(
            persistent.join(file),
            0,
            TdbFlags::DEFAULT,
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )
        .unwrap();
        tdb.store(
            b"k",
            &value_with_header(&header(3, 1, 0), b"v"),
            StoreMode::Replace,
        )
        .unwrap();
    }
    let env = Env::new();
    let mut dbs = DatabaseSet::new(dir.config(1), Box::new(TdbBackend)).unwrap();
    dbs.attach_persistent_databases(&env.ctx()).unwrap();
    let mut names: Vec<&str> = dbs.databases().map(Database::name).collect();
    names.sort_unstable();
    // "01" parses as node 1, as sscanf("%u") does.
    assert_eq!(names, ["registry.tdb", "secrets.tdb", "zero.tdb"]);
    for db in dbs.databases() {
        assert!(db.is_persistent());
        assert_eq!(db.tdb_flags().bits(), 0x400);
    }
    // The data survived (persistent files are not cleared).
    let id = hash::db_id("secrets.tdb");
    let value = dbs.get_mut(id).unwrap().store_mut().fetch(b"k").unwrap();
    assert_eq!(value, Some(value_with_header(&header(3, 1, 0), b"v")));
    // Start-up freezes them all, waiting for the locks.
    dbs.freeze_all_blocking().unwrap();
    assert!(dbs
        .databases()
        .all(|db| db.freeze_mode() == FreezeMode::Frozen));
    assert!(!dbs.allow_access(id));
}

#[test]
fn unhealthy_persistent_databases_and_health_controls() {
    let (backend, mut dbs) = memory_set(0);
    let mut env = Env::new();
    let health = PathBuf::from("/mem/state/persistent_health.tdb.0");
    backend.put_file(&health, [(b"bad.tdb".to_vec(), b"corrupt".to_vec())]);
    // A persistent database marked unhealthy cannot be attached.
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbAttachPersistent,
        &name_data("bad.tdb"),
    );
    // A volatile one of the same name can, and reports the reason.
    let id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "bad.tdb");
    assert_eq!(
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbGetHealth,
            &id.to_ne_bytes()
        ),
        b"corrupt\0"
    );

    // A commit without healthy nodes keeps the reason, prefixed once.
    env.healthy_nodes = 0;
    for _ in 0..2 {
        ok(&mut dbs, &env, ControlOpcode::DbFreeze, &id.to_ne_bytes());
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbTransactionStart,
            &transdb(id, 9),
        );
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbTransactionCommit,
            &transdb(id, 9),
        );
        ok(&mut dbs, &env, ControlOpcode::DbThaw, &id.to_ne_bytes());
    }
    assert_eq!(
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbGetHealth,
            &id.to_ne_bytes()
        ),
        b"NO-HEALTHY-NODES - corrupt\0"
    );
    effects(&mut dbs);

    // DB_SET_HEALTHY clears it; during STARTUP that forces a recovery.
    env.runstate = Runstate::Startup;
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbSetHealthy,
        &id.to_ne_bytes(),
    );
    assert_eq!(effects(&mut dbs), vec![DbEffect::SetRecoveryModeActive]);
    assert!(ok(
        &mut dbs,
        &env,
        ControlOpcode::DbGetHealth,
        &id.to_ne_bytes()
    )
    .is_empty());
    assert_eq!(backend.file_records(&health).unwrap(), vec![]);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbSetHealthy,
        &id.to_ne_bytes(),
    );
    assert!(effects(&mut dbs).is_empty(), "already healthy: no recovery");
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbGetHealth,
        &1u32.to_ne_bytes(),
    );
    fails(&mut dbs, &env, ControlOpcode::DbSetHealthy, &[0; 8]);

    // A healthy commit also removes a reason.
    backend.put_file(&health, [(b"bad.tdb".to_vec(), b"again".to_vec())]);
    env.healthy_nodes = 1;
    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &id.to_ne_bytes());
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(id, 9),
    );
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionCommit,
        &transdb(id, 9),
    );
    assert_eq!(backend.file_records(&health).unwrap(), vec![]);
}

#[test]
fn volatile_database_not_empty_on_attach_is_fatal() {
    let (backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let path = PathBuf::from("/mem/volatile/busy.tdb.0");
    backend.put_file(&path, [(b"k".to_vec(), b"v".to_vec())]);
    // Somebody else has it open, so CLEAR_IF_FIRST does not wipe it.
    let _other = MemoryBackend::clone(&backend)
        .open(&path, 0, TdbFlags::DEFAULT)
        .unwrap();
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbAttach,
        &name_data("busy.tdb"),
    );
    assert_eq!(
        effects(&mut dbs),
        vec![DbEffect::Fatal {
            reason: "database not empty on attach".to_owned()
        }]
    );
}

// ---- recovery ----------------------------------------------------------------------------

const PULL_SRVID: u64 = 0xF001_0000_0000_0001;
const PUSH_SRVID: u64 = 0xF001_0000_0000_0002;
const TID: u32 = 0x1234_5678;

/// Freezes `db_id`, opens the recovery transaction, wipes it if asked, and starts a push on
/// [`PUSH_SRVID`]: the daemon side of a recovery up to the pushed buffers.
fn open_push(dbs: &mut DatabaseSet, env: &Env, db_id: u32, wipe: bool) {
    let id = db_id.to_ne_bytes();
    assert_eq!(ok(dbs, env, ControlOpcode::DbFreeze, &id), b"");
    ok(
        dbs,
        env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID),
    );
    if wipe {
        ok(dbs, env, ControlOpcode::WipeDatabase, &transdb(db_id, TID));
    }
    ok(
        dbs,
        env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
}

fn rec_buffer(db_id: u32, records: &[(&[u8], LtdbHeader, &[u8])]) -> Vec<u8> {
    RecBuffer {
        db_id,
        records: records
            .iter()
            .map(|(key, h, data)| RecData::with_header(0, h, key, data))
            .collect(),
    }
    .to_bytes()
}

/// The messages DB_PULL produced, decoded; asserts they all go to `pnn`/`srvid`.
fn pulled_buffers(got: Vec<DbEffect>, pnn: Pnn, srvid: u64) -> Vec<(usize, RecBuffer)> {
    got.into_iter()
        .map(|e| match e {
            DbEffect::SendMessage {
                pnn: to,
                srvid: s,
                data,
            } => {
                assert_eq!((to, s), (pnn, srvid));
                let data = data.payload();
                let (buffer, used) = RecBuffer::pull(data).unwrap();
                assert_eq!(used, data.len());
                (data.len(), buffer)
            }
            other => panic!("unexpected effect {other:?}"),
        })
        .collect()
}

/// What the recovery helper does to one database on this node, with the records it pushes.
fn recover_database(
    dbs: &mut DatabaseSet,
    env: &Env,
    db_id: u32,
    pushed: &[(&[u8], LtdbHeader, &[u8])],
    old_records: usize,
) {
    let id = db_id.to_ne_bytes();
    assert_eq!(ok(dbs, env, ControlOpcode::DbFreeze, &id), b"");
    assert!(!dbs.allow_access(db_id));
    ok(
        dbs,
        env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID),
    );
    assert!(dbs.allow_access(db_id));

    // The helper pulls what this node has ...
    let count = ok(dbs, env, ControlOpcode::DbPull, &pulldb(db_id, PULL_SRVID));
    let buffers = pulled_buffers(effects(dbs), 1, PULL_SRVID);
    let pulled: usize = buffers.iter().map(|(_, b)| b.records.len()).sum();
    assert_eq!(u32_of(&count) as usize, pulled);
    assert_eq!(pulled, old_records);

    // ... wipes it (only with the transaction's id) ...
    fails(
        dbs,
        env,
        ControlOpcode::WipeDatabase,
        &transdb(db_id, TID + 1),
    );
    ok(dbs, env, ControlOpcode::WipeDatabase, &transdb(db_id, TID));

    // ... pushes the merged records in two buffers ...
    ok(
        dbs,
        env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    let (first, second) = pushed.split_at(pushed.len() / 2);
    assert!(dbs.on_message(PUSH_SRVID, &rec_buffer(db_id, first), &env.ctx()));
    assert!(dbs.on_message(PUSH_SRVID, &rec_buffer(db_id, second), &env.ctx()));
    assert!(!dbs.on_message(PUSH_SRVID + 1, &rec_buffer(db_id, first), &env.ctx()));
    let confirmed = ok(dbs, env, ControlOpcode::DbPushConfirm, &id);
    assert_eq!(u32_of(&confirmed) as usize, pushed.len());
    fails(dbs, env, ControlOpcode::DbPushConfirm, &id);

    // ... and commits with the new generation, then thaws.
    fails(
        dbs,
        env,
        ControlOpcode::DbTransactionCommit,
        &transdb(db_id, TID - 1),
    );
    assert_eq!(dbs.get(db_id).unwrap().generation(), 7);
    ok(
        dbs,
        env,
        ControlOpcode::DbTransactionCommit,
        &transdb(db_id, TID),
    );
    assert_eq!(dbs.get(db_id).unwrap().generation(), TID);
    fails(
        dbs,
        env,
        ControlOpcode::DbTransactionCommit,
        &transdb(db_id, TID),
    );
    ok(dbs, env, ControlOpcode::DbThaw, &id);
    assert_eq!(effects(dbs), vec![DbEffect::Thawed { db_id }]);
    assert!(dbs.allow_access(db_id));
    assert_eq!(dbs.get(db_id).unwrap().freeze_mode(), FreezeMode::None);
}

/// The full recovery of a volatile and a persistent database, then the files as another
/// process reads them.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

fn full_recovery(dbs: &mut DatabaseSet, read_file: &dyn Fn(&Path) -> Records) {
    let env = Env::new();
    let vol = attach(dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    let per = attach(dbs, &env, ControlOpcode::DbAttachPersistent, "secrets.tdb");
    for db_id in [vol, per] {
        let store = dbs.get_mut(db_id).unwrap().store_mut();
        for i in 0..3 {
            let key = format!("old-{i}");
            store
                .store(key.as_bytes(), &[&header(1, 1, 0).to_bytes(), b"stale"])
                .unwrap();
        }
    }
    assert!(dbs.generations_match(7));

    let ro = REC_RO_HAVE_READONLY | REC_RO_HAVE_DELEGATIONS;
    // What the helper sends for a volatile database: dmaster = leader (this node, 0) and
    // MIGRATED_WITH_DATA; one record says another dmaster.
    let vol_pushed: Vec<(&[u8], LtdbHeader, &[u8])> = vec![
        (
            b"alpha",
            header(5, 0, REC_FLAG_MIGRATED_WITH_DATA | ro),
            b"one",
        ),
        (b"beta", header(9, 0, REC_FLAG_MIGRATED_WITH_DATA), b"two"),
        (
            b"gamma",
            header(2, 1, REC_FLAG_MIGRATED_WITH_DATA),
            b"three",
        ),
    ];
    recover_database(dbs, &env, vol, &vol_pushed, 3);
    assert!(
        !dbs.generations_match(TID),
        "the persistent one is not recovered yet"
    );

    let seqnum_value = 42u64.to_ne_bytes();
    let per_pushed: Vec<(&[u8], LtdbHeader, &[u8])> = vec![
        (DB_SEQNUM_KEY, header(3, 1, 0), &seqnum_value),
        (b"machine-password", header(3, 1, ro), b"secret"),
    ];
    recover_database(dbs, &env, per, &per_pushed, 3);
    assert!(dbs.generations_match(TID));
    assert!(!dbs.generations_match(7));

    let seqnum = ok(
        dbs,
        &env,
        ControlOpcode::GetDbSeqnum,
        &u64::from(per).to_ne_bytes(),
    );
    assert_eq!(seqnum, 42u64.to_ne_bytes());

    let flags = REC_FLAG_MIGRATED_WITH_DATA;
    let vol_path = dbs.get(vol).unwrap().path().to_path_buf();
    assert_eq!(
        read_file(&vol_path),
        vec![
            // RO flags are stripped; this node is the dmaster, so the store bumps the RSN.
            (
                b"alpha".to_vec(),
                value_with_header(&header(6, 0, flags), b"one")
            ),
            (
                b"beta".to_vec(),
                value_with_header(&header(10, 0, flags), b"two")
            ),
            (
                b"gamma".to_vec(),
                value_with_header(&header(2, 1, flags), b"three")
            ),
        ]
    );
    let per_path = dbs.get(per).unwrap().path().to_path_buf();
    assert_eq!(
        read_file(&per_path),
        vec![
            (
                DB_SEQNUM_KEY.to_vec(),
                value_with_header(&header(3, 1, 0), &seqnum_value)
            ),
            (
                b"machine-password".to_vec(),
                value_with_header(&header(3, 1, 0), b"secret")
            ),
        ]
    );
}

#[test]
fn full_recovery_sequence_on_real_tdb_files() {
    let (_dir, mut dbs) = libtdb_set("recovery", 0);
    full_recovery(&mut dbs, &tdbdump);
}

#[test]
fn full_recovery_sequence_in_memory() {
    let (backend, mut dbs) = memory_set(0);
    full_recovery(&mut dbs, &|path| backend.file_records(path).unwrap());
}

#[test]
fn pull_streams_buffers_split_at_the_size_limit() {
    let (_dir, mut dbs) = libtdb_set("pull", 0);
    let mut env = Env::new();
    env.set_tunable("RecBufferSizeLimit", 300);
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "pull.tdb");
    let mut expected = Vec::new();
    for i in 0..20 {
        let key = format!("key-{i:02}");
        let value = value_with_header(&header(i, 1, 0), b"0123456789");
        dbs.get_mut(db_id)
            .unwrap()
            .store_mut()
            .store(key.as_bytes(), &[&value])
            .unwrap();
        expected.push((key.into_bytes(), value));
    }
    let id = db_id.to_ne_bytes();

    // Only a frozen database in its recovery transaction can be pulled (outside the
    // transaction libtdb refuses stock's lock marks).
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbPull,
        &pulldb(db_id, PULL_SRVID),
    );
    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &id);
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbPull,
        &pulldb(db_id, PULL_SRVID),
    );
    assert!(effects(&mut dbs).is_empty());
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID),
    );
    fails(&mut dbs, &env, ControlOpcode::DbPull, &[0; 8]);

    let payload = pulldb(db_id, PULL_SRVID);
    let req = DbRequest {
        srcnode: 3,
        ..request(ControlOpcode::DbPull, &payload)
    };
    let DbControlOutcome::Reply(reply) = dbs.handle_control(T0, &req, &env.ctx()) else {
        panic!("no reply");
    };
    assert_eq!(u32_of(&reply.data), 20);
    let buffers = pulled_buffers(effects(&mut dbs), 3, PULL_SRVID);
    // Each record is 16 + 6 + 34 = 56 bytes: a buffer is sent once 8 + 56 * n >= 300.
    let counts: Vec<usize> = buffers.iter().map(|(_, b)| b.records.len()).collect();
    assert_eq!(counts, [6, 6, 6, 2]);
    let mut got = Vec::new();
    for (i, (size, buffer)) in buffers.iter().enumerate() {
        assert_eq!(buffer.db_id, db_id);
        if i + 1 < buffers.len() {
            assert!(*size >= 300 && size - 56 < 300, "{size}");
        }
        for rec in &buffer.records {
            assert_eq!(rec.reqid, 0);
            got.push((rec.key.clone(), rec.data.clone()));
        }
    }
    got.sort();
    assert_eq!(got, expected);

    // The pull saw the transaction's view: after a wipe there is nothing.
    ok(
        &mut dbs,
        &env,
        ControlOpcode::WipeDatabase,
        &transdb(db_id, TID),
    );
    assert_eq!(
        u32_of(&ok(
            &mut dbs,
            &env,
            ControlOpcode::DbPull,
            &pulldb(db_id, 9)
        )),
        0
    );
    assert!(effects(&mut dbs).is_empty());
    // Cancelling brings the records back.
    ok(&mut dbs, &env, ControlOpcode::DbTransactionCancel, &id);
    ok(&mut dbs, &env, ControlOpcode::DbTransactionCancel, &id);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID),
    );
    env.set_tunable("RecBufferSizeLimit", 1_000_000);
    assert_eq!(
        u32_of(&ok(
            &mut dbs,
            &env,
            ControlOpcode::DbPull,
            &pulldb(db_id, 9)
        )),
        20
    );
    assert_eq!(
        effects(&mut dbs).len(),
        1,
        "one buffer under the default limit"
    );
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
}

/// The only effect is the failure of the deferred pull `deferred`.
fn assert_pull_failed(got: Vec<DbEffect>, deferred: DeferredId) {
    assert!(
        matches!(&got[..], [DbEffect::Complete { id, reply }] if *id == deferred && reply.status == -1),
        "{got:?}"
    );
}

/// A database larger than one step is pulled over several timer steps: the first messages
/// leave with the control, the reply (the count) comes last as a deferred completion, a
/// congested reader holds the walk, and a thaw in the middle fails it.
#[test]
fn a_large_pull_is_streamed_in_steps_and_paced_by_its_reader() {
    use super::recovery::PULL_STEP_RECORDS;
    // This node (1) is the requester's, so the reader is a local client.
    let (_dir, mut dbs) = libtdb_set("pullsteps", 1);
    let mut env = Env::new();
    env.set_tunable("RecBufferSizeLimit", 20_000);
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "steps.tdb");
    let total = PULL_STEP_RECORDS * 3 + 17;
    for i in 0..total {
        let value = value_with_header(&header(i as u64, 0, 0), b"value");
        dbs.get_mut(db_id)
            .unwrap()
            .store_mut()
            .store(format!("k{i}").as_bytes(), &[&value])
            .unwrap();
    }
    let id = db_id.to_ne_bytes();
    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &id);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID),
    );
    let pull = |dbs: &mut DatabaseSet, env: &Env| {
        let payload = pulldb(db_id, PULL_SRVID);
        match dbs.handle_control(T0, &request(ControlOpcode::DbPull, &payload), &env.ctx()) {
            DbControlOutcome::Deferred(id) => id,
            other => panic!("a large pull should be deferred: {other:?}"),
        }
    };

    let deferred = pull(&mut dbs, &env);
    let mut keys = std::collections::BTreeSet::new();
    let first = pulled_buffers(effects(&mut dbs), 1, PULL_SRVID);
    assert!(!first.is_empty(), "the first step sends at once");
    for (_, buffer) in &first {
        keys.extend(buffer.records.iter().map(|r| r.key.clone()));
    }
    // A reader that does not keep up holds the walk.
    let due = dbs.poll_timeout().expect("the walk asks for a step");
    assert!(!dbs.walks_wait_for_readers());
    dbs.handle_timeout_paced(due, &env.ctx(), &|sink| {
        assert_eq!(sink, TraverseSink::Srvid(PULL_SRVID));
        true
    });
    assert!(effects(&mut dbs).is_empty());
    // It goes on as soon as the reader catches up, before its fallback timer.
    assert!(dbs.walks_wait_for_readers());
    assert!(dbs.poll_timeout().is_some_and(|fallback| fallback > due));
    dbs.handle_timeout_paced(due, &env.ctx(), &|_| false);
    assert!(!dbs.walks_wait_for_readers());
    for (_, buffer) in pulled_buffers(effects(&mut dbs), 1, PULL_SRVID) {
        keys.extend(buffer.records.iter().map(|r| r.key.clone()));
    }
    assert!(keys.len() > first.iter().map(|(_, b)| b.records.len()).sum::<usize>());
    let mut reply = None;
    for _ in 0..100 {
        let now = dbs.poll_timeout().expect("the walk is still running");
        dbs.handle_timeout_paced(now, &env.ctx(), &|_| false);
        for effect in effects(&mut dbs) {
            match effect {
                DbEffect::Complete { id, reply: r } => {
                    assert_eq!(id, deferred);
                    assert!(reply.is_none(), "one reply");
                    reply = Some(r);
                }
                other => {
                    assert!(reply.is_none(), "no message after the reply");
                    for (_, buffer) in pulled_buffers(vec![other], 1, PULL_SRVID) {
                        for r in buffer.records {
                            assert!(keys.insert(r.key), "a record twice");
                        }
                    }
                }
            }
        }
        if reply.is_some() {
            break;
        }
    }
    let reply = reply.expect("the pull ends");
    assert_eq!(reply.status, 0);
    assert_eq!(u32_of(&reply.data) as usize, total);
    assert_eq!(keys.len(), total);
    assert_eq!(dbs.poll_timeout(), None, "no walk left");

    // A new transaction (a new helper) ends a pull still walking.
    let deferred = pull(&mut dbs, &env);
    effects(&mut dbs);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID + 1),
    );
    assert_pull_failed(effects(&mut dbs), deferred);
    assert_eq!(dbs.poll_timeout(), None, "no walk left");

    // Thawed half-way: the pull fails instead of reading an unlocked file.
    let deferred = pull(&mut dbs, &env);
    effects(&mut dbs);
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
    effects(&mut dbs);
    let now = dbs.poll_timeout().expect("the walk is due");
    dbs.handle_timeout(now, &env.ctx());
    assert_pull_failed(effects(&mut dbs), deferred);
}

/// Runs a DB_PULL of `db_id` to its end (or only its first step); returns the records sent.
fn pull_to_end(dbs: &mut DatabaseSet, env: &Env, db_id: u32, first_step_only: bool) -> usize {
    let payload = pulldb(db_id, PULL_SRVID);
    let mut pulled = 0;
    let count = |effects: Vec<DbEffect>, done: &mut bool| -> usize {
        let mut records = 0;
        for effect in effects {
            match effect {
                DbEffect::Complete { reply, .. } => {
                    assert_eq!(reply.status, 0);
                    *done = true;
                }
                other => {
                    for (_, buffer) in pulled_buffers(vec![other], 1, PULL_SRVID) {
                        records += buffer.records.len();
                    }
                }
            }
        }
        records
    };
    let mut done = false;
    match dbs.handle_control(T0, &request(ControlOpcode::DbPull, &payload), &env.ctx()) {
        DbControlOutcome::Deferred(_) => {}
        DbControlOutcome::Reply(reply) => {
            assert_eq!(reply.status, 0);
            done = true;
        }
        other => panic!("pull: {other:?}"),
    }
    pulled += count(effects(dbs), &mut done);
    while !done && !first_step_only {
        let due = dbs.poll_timeout().expect("the walk is still running");
        dbs.handle_timeout_paced(due, &env.ctx(), &|_| false);
        pulled += count(effects(dbs), &mut done);
    }
    pulled
}

/// Freezes `db_id`, opens the recovery transaction, pulls (all of it, or only the first step
/// with `Some(true)`), wipes and pushes `pushed`, as a recovery helper does before the commit.
fn recover_until_commit(
    dbs: &mut DatabaseSet,
    env: &Env,
    db_id: u32,
    pull: Option<bool>,
    pushed: &[(&[u8], LtdbHeader, &[u8])],
) -> usize {
    let id = db_id.to_ne_bytes();
    ok(dbs, env, ControlOpcode::DbFreeze, &id);
    ok(
        dbs,
        env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID),
    );
    let pulled = pull.map_or(0, |first_step_only| {
        pull_to_end(dbs, env, db_id, first_step_only)
    });
    ok(dbs, env, ControlOpcode::WipeDatabase, &transdb(db_id, TID));
    ok(
        dbs,
        env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    assert!(dbs.on_message(PUSH_SRVID, &rec_buffer(db_id, pushed), &env.ctx()));
    ok(dbs, env, ControlOpcode::DbPushConfirm, &id);
    pulled
}

/// How a recovery transaction that is not committed ends.
#[derive(Debug, Clone, Copy)]
enum Abandon {
    Cancel,
    Thaw,
    NewTransaction,
}

#[test]
fn an_abandoned_recovery_leaves_every_record_as_it_was() {
    use super::recovery::PULL_STEP_RECORDS;
    // Volatile databases recover with an undo log, persistent ones in a libtdb transaction:
    // both must end up as they started, whether the pull saw everything, part or nothing.
    let (_dir, mut dbs) = libtdb_set("undo", 1);
    let env = Env::new();
    let volatile = attach(&mut dbs, &env, ControlOpcode::DbAttach, "undo.tdb");
    let persistent = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    let total = PULL_STEP_RECORDS * 2 + 5;
    for db_id in [volatile, persistent] {
        let store = dbs.get_mut(db_id).unwrap().store_mut();
        for i in 0..total {
            let value = value_with_header(&header(i as u64, 1, 0), format!("v{i}").as_bytes());
            store.store(format!("k{i}").as_bytes(), &[&value]).unwrap();
        }
    }
    let originals: Vec<Records> = [volatile, persistent]
        .iter()
        .map(|db_id| tdbdump(dbs.get(*db_id).unwrap().path()))
        .collect();
    assert_eq!(originals[0].len(), total);

    let pushed = [(b"new".as_slice(), header(99, 1, 0), b"data".as_slice())];
    let scenarios = [
        (Some(false), Abandon::Cancel),
        (Some(true), Abandon::Thaw),
        (None, Abandon::NewTransaction),
        (Some(false), Abandon::NewTransaction),
    ];
    for (db_id, original) in [volatile, persistent].into_iter().zip(&originals) {
        let id = db_id.to_ne_bytes();
        for (pull, abandon) in scenarios {
            let pulled = recover_until_commit(&mut dbs, &env, db_id, pull, &pushed);
            assert!(pull != Some(false) || pulled == total, "pulled {pulled}");
            match abandon {
                Abandon::Cancel => {
                    ok(&mut dbs, &env, ControlOpcode::DbTransactionCancel, &id);
                }
                Abandon::Thaw => {}
                Abandon::NewTransaction => {
                    ok(
                        &mut dbs,
                        &env,
                        ControlOpcode::DbTransactionStart,
                        &transdb(db_id, TID + 1),
                    );
                    ok(
                        &mut dbs,
                        &env,
                        ControlOpcode::DbTransactionCommit,
                        &transdb(db_id, TID + 1),
                    );
                }
            }
            ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
            effects(&mut dbs);
            let path = dbs.get(db_id).unwrap().path().to_path_buf();
            assert_eq!(
                &tdbdump(&path),
                original,
                "db {db_id:#x}: pull {pull:?}, then {abandon:?}"
            );
        }

        // Committed, the push is all there is.
        assert_eq!(
            recover_until_commit(&mut dbs, &env, db_id, Some(false), &pushed),
            total
        );
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbTransactionCommit,
            &transdb(db_id, TID),
        );
        ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
        effects(&mut dbs);
        let path = dbs.get(db_id).unwrap().path().to_path_buf();
        let keys: Vec<Vec<u8>> = tdbdump(&path).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![b"new".to_vec()],
            "db {db_id:#x} after the commit"
        );
    }
}

#[test]
fn transaction_and_push_rules() {
    let (backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "t.tdb");
    let id = db_id.to_ne_bytes();
    let unknown = 0xdead_beef_u32;

    // Nothing works unfrozen (cancel is always fine).
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, 1),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::WipeDatabase,
        &transdb(db_id, 1),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    fails(&mut dbs, &env, ControlOpcode::DbPushConfirm, &id);
    ok(&mut dbs, &env, ControlOpcode::DbTransactionCancel, &id);
    for opcode in [
        ControlOpcode::DbFreeze,
        ControlOpcode::DbThaw,
        ControlOpcode::DbTransactionCancel,
        ControlOpcode::DbPushConfirm,
        ControlOpcode::DbOpenFlags,
    ] {
        fails(&mut dbs, &env, opcode, &unknown.to_ne_bytes());
        fails(&mut dbs, &env, opcode, &[0; 3]);
    }
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(unknown, 1),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionCommit,
        &transdb(unknown, 1),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::WipeDatabase,
        &transdb(unknown, 1),
    );
    fails(&mut dbs, &env, ControlOpcode::DbPull, &pulldb(unknown, 1));
    fails(&mut dbs, &env, ControlOpcode::DbTransactionStart, &[0; 9]);
    fails(&mut dbs, &env, ControlOpcode::DbFreeze, &[]);
    fails(&mut dbs, &env, ControlOpcode::Freeze, &[0]);
    assert_eq!(
        outcome(&mut dbs, &env, ControlOpcode::GetPnn, &[]),
        DbControlOutcome::NotMine
    );

    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &id);
    // Frozen, but no transaction yet.
    fails(
        &mut dbs,
        &env,
        ControlOpcode::WipeDatabase,
        &transdb(db_id, 1),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionCommit,
        &transdb(db_id, 1),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );

    // A second start replaces the first transaction (its changes are gone).
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, 1),
    );
    dbs.get_mut(db_id)
        .unwrap()
        .store_mut()
        .store(b"lost", &[&header(1, 0, 0).to_bytes()])
        .unwrap();
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, 2),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionCommit,
        &transdb(db_id, 1),
    );

    // Pushes: a buffer with a header-less record fails the push from there on, and the
    // confirmation counts only the buffers stored before.
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    // A second start restarts the count.
    assert!(dbs.on_message(
        PUSH_SRVID,
        &rec_buffer(db_id, &[(b"a", header(1, 1, 0), b"x")]),
        &env.ctx()
    ));
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    let good = rec_buffer(
        db_id,
        &[(b"a", header(1, 1, 0), b"x"), (b"b", header(1, 1, 0), b"y")],
    );
    assert!(dbs.on_message(PUSH_SRVID, &good, &env.ctx()));
    let bad = RecBuffer {
        db_id,
        records: vec![
            RecData::with_header(0, &header(1, 1, 0), b"c", b"z"),
            RecData {
                reqid: 0,
                key: b"d".to_vec(),
                data: b"short".to_vec(),
            },
        ],
    }
    .to_bytes();
    assert!(dbs.on_message(PUSH_SRVID, &bad, &env.ctx()));
    assert!(dbs.on_message(PUSH_SRVID, &good, &env.ctx()));
    assert_eq!(
        u32_of(&ok(&mut dbs, &env, ControlOpcode::DbPushConfirm, &id)),
        2
    );

    // Undecodable buffers fail the push too.
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    assert!(dbs.on_message(PUSH_SRVID, b"garbage", &env.ctx()));
    assert!(dbs.on_message(PUSH_SRVID, &good, &env.ctx()));
    assert_eq!(
        u32_of(&ok(&mut dbs, &env, ControlOpcode::DbPushConfirm, &id)),
        0
    );

    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionCommit,
        &transdb(db_id, 2),
    );
    let path = dbs.get(db_id).unwrap().path().to_path_buf();
    let keys: Vec<Vec<u8>> = backend
        .file_records(&path)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // "c" went in before the bad record stopped the buffer, as in stock.
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);

    // A thaw abandons an open push and cancels the transaction.
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, 3),
    );
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
    assert!(!dbs.on_message(PUSH_SRVID, &good, &env.ctx()));
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
}

#[test]
fn records_are_stored_as_ctdb_ltdb_store_server_decides() {
    let (backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let ctx = env.ctx();
    let vol = attach(&mut dbs, &env, ControlOpcode::DbAttach, "v.tdb");
    let per = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    // Keys whose lmaster (map [0, 1]) is this node, and another node.
    let key_for = |lmaster: u32| {
        (0u32..)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|k| ltdb::lmaster(&ctx, k) == lmaster)
            .unwrap()
    };
    let mine = key_for(0);
    let theirs = key_for(1);
    use crate::protocol::ltdb::REC_FLAG_VACUUM_MIGRATED as VM;

    let db = dbs.get_mut(vol).unwrap();
    let stored = |db: &mut Database, key: &[u8]| db.store_mut().fetch(key).unwrap();
    // Data, dmaster here: kept, RSN bumped.
    db.ltdb_store(0, &ctx, &theirs, &header(4, 0, 0), b"d")
        .unwrap();
    assert_eq!(
        stored(db, &theirs),
        Some(value_with_header(&header(5, 0, 0), b"d"))
    );
    // Data, dmaster elsewhere: kept as is.
    db.ltdb_store(0, &ctx, &theirs, &header(4, 1, 0), b"d")
        .unwrap();
    assert_eq!(
        stored(db, &theirs),
        Some(value_with_header(&header(4, 1, 0), b"d"))
    );
    // Empty, not ours in any way: deleted.
    db.ltdb_store(0, &ctx, &theirs, &header(4, 1, 0), b"")
        .unwrap();
    assert_eq!(stored(db, &theirs), None);
    assert!(db
        .ltdb_store(0, &ctx, &theirs, &header(4, 1, 0), b"")
        .is_err());
    // Empty AUTOMATIC record: kept without the flag (bumped, as we are dmaster).
    db.ltdb_store(0, &ctx, &theirs, &header(0, 0, REC_FLAG_AUTOMATIC), b"")
        .unwrap();
    assert_eq!(stored(db, &theirs), Some(header(1, 0, 0).to_bytes()));
    // Empty on the lmaster: kept, unless a vacuum brought it back to us as dmaster.
    db.ltdb_store(0, &ctx, &mine, &header(2, 1, VM), b"")
        .unwrap();
    assert_eq!(stored(db, &mine), Some(header(2, 1, 0).to_bytes()));
    db.ltdb_store(0, &ctx, &mine, &header(2, 0, VM), b"")
        .unwrap();
    assert_eq!(stored(db, &mine), None);
    // RO flags: kept, no RSN bump.
    db.ltdb_store(0, &ctx, &mine, &header(2, 0, REC_RO_HAVE_READONLY), b"")
        .unwrap();
    assert_eq!(
        stored(db, &mine),
        Some(header(2, 0, REC_RO_HAVE_READONLY).to_bytes())
    );

    // Persistent databases store exactly what they are given.
    let db = dbs.get_mut(per).unwrap();
    db.ltdb_store(
        0,
        &ctx,
        &theirs,
        &header(0, 1, REC_FLAG_AUTOMATIC | VM),
        b"",
    )
    .unwrap();
    assert_eq!(
        stored(db, &theirs),
        Some(header(0, 1, REC_FLAG_AUTOMATIC | VM).to_bytes())
    );
    drop(backend);
}

#[test]
fn db_seqnum_reads_the_sequence_number_record() {
    let (_dir, mut dbs) = libtdb_set("seqnum", 0);
    let env = Env::new();
    let per = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    let req = u64::from(per).to_ne_bytes();

    // No record: 0, and (as ctdb_ltdb_fetch does for persistent databases) an initial
    // header-only record naming the lmaster is left behind.
    assert_eq!(
        ok(&mut dbs, &env, ControlOpcode::GetDbSeqnum, &req),
        0u64.to_ne_bytes()
    );
    let path = dbs.get(per).unwrap().path().to_path_buf();
    let lmaster = lmaster(&env.ctx(), DB_SEQNUM_KEY);
    assert_eq!(
        tdbdump(&path),
        vec![(
            DB_SEQNUM_KEY.to_vec(),
            header(0, lmaster, REC_FLAG_AUTOMATIC).to_bytes()
        )]
    );

    let set = |dbs: &mut DatabaseSet, data: &[u8]| {
        dbs.get_mut(per)
            .unwrap()
            .store_mut()
            .store(DB_SEQNUM_KEY, &[&header(1, 0, 0).to_bytes(), data])
            .unwrap();
    };
    set(&mut dbs, &0x0102_0304_0506_0708u64.to_ne_bytes());
    assert_eq!(
        ok(&mut dbs, &env, ControlOpcode::GetDbSeqnum, &req),
        0x0102_0304_0506_0708u64.to_ne_bytes()
    );
    set(&mut dbs, &[1, 2, 3, 4]);
    assert_eq!(
        ok(&mut dbs, &env, ControlOpcode::GetDbSeqnum, &req),
        0u64.to_ne_bytes()
    );
    set(&mut dbs, &9u64.to_ne_bytes());

    // The request is a u64: four bytes are refused, as is an unknown database.
    fails(
        &mut dbs,
        &env,
        ControlOpcode::GetDbSeqnum,
        &per.to_ne_bytes(),
    );
    fails(
        &mut dbs,
        &env,
        ControlOpcode::GetDbSeqnum,
        &7u64.to_ne_bytes(),
    );
    // Frozen: only inside the recovery transaction.
    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &per.to_ne_bytes());
    fails(&mut dbs, &env, ControlOpcode::GetDbSeqnum, &req);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(per, TID),
    );
    assert_eq!(
        ok(&mut dbs, &env, ControlOpcode::GetDbSeqnum, &req),
        9u64.to_ne_bytes()
    );
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &per.to_ne_bytes());

    // A volatile database stores the initial header only where this node is the lmaster,
    // through the server store (RSN bumped, AUTOMATIC dropped).
    let vol = attach(&mut dbs, &env, ControlOpcode::DbAttach, "v.tdb");
    assert_eq!(
        ok(
            &mut dbs,
            &env,
            ControlOpcode::GetDbSeqnum,
            &u64::from(vol).to_ne_bytes()
        ),
        0u64.to_ne_bytes()
    );
    let vpath = dbs.get(vol).unwrap().path().to_path_buf();
    let expected = if lmaster == 0 {
        vec![(DB_SEQNUM_KEY.to_vec(), header(1, 0, 0).to_bytes())]
    } else {
        vec![]
    };
    assert_eq!(tdbdump(&vpath), expected);
}

// ---- freezing ----------------------------------------------------------------------------

/// The freeze really locks the file for other processes, through the whole recovery, until
/// the thaw: smbd's `tdb_chainlock_nonblock` fails (and its `tdb_chainlock` would wait).
#[test]
fn freeze_blocks_other_processes_chain_locks_until_thaw() {
    let (_dir, mut dbs) = libtdb_set("blocks", 0);
    let env = Env::new();
    // The volatile database uses robust mutexes where libtdb supports them (0x1c41), the
    // replicated and persistent ones fcntl locks.
    if !tdb::robust_mutexes_supported() {
        eprintln!("robust mutexes are not supported here; every case uses fcntl locks");
    }
    let kinds = [
        (ControlOpcode::DbAttach, "vol.tdb"),
        (ControlOpcode::DbAttachReplicated, "rep.tdb"),
        (ControlOpcode::DbAttachPersistent, "per.tdb"),
    ];
    for (opcode, name) in kinds {
        let db_id = attach(&mut dbs, &env, opcode, name);
        let id = db_id.to_ne_bytes();
        let path = dbs.get(db_id).unwrap().path().to_path_buf();
        let flags = dbs.get(db_id).unwrap().tdb_flags().bits();
        if name == "vol.tdb" && tdb::robust_mutexes_supported() {
            assert_eq!(flags, 0x1c41);
        }
        assert_eq!(probe(&path, flags, "some-key"), "locked", "{name} before");

        ok(&mut dbs, &env, ControlOpcode::DbFreeze, &id);
        assert_eq!(probe(&path, flags, "some-key"), "busy", "{name} frozen");
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbTransactionStart,
            &transdb(db_id, TID),
        );
        assert_eq!(
            probe(&path, flags, "other-key"),
            "busy",
            "{name} in transaction"
        );
        ok(
            &mut dbs,
            &env,
            ControlOpcode::WipeDatabase,
            &transdb(db_id, TID),
        );
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbPushStart,
            &pulldb(db_id, PUSH_SRVID),
        );
        let buffer = rec_buffer(
            db_id,
            &[(b"k", header(1, 1, REC_FLAG_MIGRATED_WITH_DATA), b"v")],
        );
        assert!(dbs.on_message(PUSH_SRVID, &buffer, &env.ctx()));
        assert_eq!(probe(&path, flags, "k"), "busy", "{name} pushing");
        ok(&mut dbs, &env, ControlOpcode::DbPushConfirm, &id);
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbTransactionCommit,
            &transdb(db_id, TID),
        );
        assert_eq!(
            probe(&path, flags, "k"),
            "busy",
            "{name} committed, still frozen"
        );
        // A second transaction, cancelled by the thaw.
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbTransactionStart,
            &transdb(db_id, TID + 1),
        );
        assert_eq!(
            probe(&path, flags, "k"),
            "busy",
            "{name} second transaction"
        );
        ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
        assert_eq!(probe(&path, flags, "k"), "locked", "{name} thawed");
        assert_eq!(
            tdbdump(&path),
            vec![(
                b"k".to_vec(),
                value_with_header(&header(1, 1, REC_FLAG_MIGRATED_WITH_DATA), b"v")
            )],
            "{name}: the committed push, not the cancelled transaction"
        );
        effects(&mut dbs);
    }

    // The node-wide freeze locks everything the same way; thaw_all releases it.
    ok(&mut dbs, &env, ControlOpcode::Freeze, &[]);
    assert!(dbs.all_frozen());
    for db in dbs.databases() {
        assert_eq!(
            probe(db.path(), db.tdb_flags().bits(), "x"),
            "busy",
            "{}",
            db.name()
        );
    }
    dbs.thaw_all();
    assert!(!dbs.all_frozen());
    for db in dbs.databases() {
        assert_eq!(
            probe(db.path(), db.tdb_flags().bits(), "x"),
            "locked",
            "{}",
            db.name()
        );
    }

    // Dropping the set while frozen releases the locks too.
    let vol = dbs.by_name("vol.tdb").unwrap();
    let (path, flags) = (vol.path().to_path_buf(), vol.tdb_flags().bits());
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbFreeze,
        &hash::db_id("vol.tdb").to_ne_bytes(),
    );
    assert_eq!(probe(&path, flags, "x"), "busy");
    drop(dbs);
    assert_eq!(probe(&path, flags, "x"), "locked");
}

/// While another process holds a chain lock the freeze stays pending and is retried; it
/// completes once the lock is released.
#[test]
fn freeze_waits_for_chain_locks_held_elsewhere() {
    let (_dir, mut dbs) = libtdb_set("waits", 0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "busy.tdb");
    let id = db_id.to_ne_bytes();
    let path = dbs.get(db_id).unwrap().path().to_path_buf();
    let flags = dbs.get(db_id).unwrap().tdb_flags().bits();

    let holder = ChainHolder::start(&path, flags, "held");
    let DbControlOutcome::Deferred(first) = outcome(&mut dbs, &env, ControlOpcode::DbFreeze, &id)
    else {
        panic!("freeze should wait");
    };
    let DbControlOutcome::Deferred(second) = outcome(&mut dbs, &env, ControlOpcode::DbFreeze, &id)
    else {
        panic!("freeze should wait");
    };
    assert_eq!(dbs.get(db_id).unwrap().freeze_mode(), FreezeMode::Pending);
    // Pending is not frozen: no recovery transaction yet.
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, 1),
    );
    let due = dbs.poll_timeout().unwrap();
    assert_eq!(due, T0.saturating_add(FREEZE_RETRY_INTERVAL));
    dbs.handle_timeout(due, &env.ctx());
    assert!(effects(&mut dbs).is_empty());
    assert_eq!(dbs.get(db_id).unwrap().freeze_mode(), FreezeMode::Pending);

    drop(holder);
    let due = dbs.poll_timeout().unwrap();
    dbs.handle_timeout(due, &env.ctx());
    assert_eq!(
        effects(&mut dbs),
        vec![
            DbEffect::Complete {
                id: first,
                reply: DbReply::status(0)
            },
            DbEffect::Complete {
                id: second,
                reply: DbReply::status(0)
            },
        ]
    );
    assert_eq!(dbs.poll_timeout(), None);
    assert_eq!(probe(&path, flags, "held"), "busy");
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
    assert_eq!(effects(&mut dbs), vec![DbEffect::Thawed { db_id }]);

    // A thaw while the freeze is still pending fails its waiters.
    let holder = ChainHolder::start(&path, flags, "held");
    let DbControlOutcome::Deferred(waiting) = outcome(&mut dbs, &env, ControlOpcode::DbFreeze, &id)
    else {
        panic!("freeze should wait");
    };
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);
    assert_eq!(
        effects(&mut dbs),
        vec![
            DbEffect::Complete {
                id: waiting,
                reply: DbReply::status(-1)
            },
            DbEffect::Thawed { db_id },
        ]
    );
    drop(holder);
    dbs.handle_timeout(Instant::from_secs(1), &env.ctx());
    assert!(effects(&mut dbs).is_empty());
    assert_eq!(dbs.get(db_id).unwrap().freeze_mode(), FreezeMode::None);
    assert_eq!(probe(&path, flags, "held"), "locked");
}

#[test]
fn node_wide_freeze() {
    let (backend, mut dbs) = memory_set(0);
    let env = Env::new();
    // With nothing attached the freeze is immediate.
    ok(&mut dbs, &env, ControlOpcode::Freeze, &[]);
    assert!(dbs.all_frozen());
    dbs.thaw_all();
    assert!(!dbs.all_frozen());

    let vol = attach(&mut dbs, &env, ControlOpcode::DbAttach, "v.tdb");
    let per = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    for db_id in [vol, per] {
        dbs.get_mut(db_id)
            .unwrap()
            .store_mut()
            .store(b"k", &[&header(1, 1, 0).to_bytes(), b"v"])
            .unwrap();
    }
    let vol_path = dbs.get(vol).unwrap().path().to_path_buf();
    backend.set_busy(&vol_path, true);
    let DbControlOutcome::Deferred(id) = outcome(&mut dbs, &env, ControlOpcode::Freeze, &[]) else {
        panic!("should wait for v.tdb");
    };
    assert!(!dbs.all_frozen());
    assert_eq!(dbs.get(per).unwrap().freeze_mode(), FreezeMode::Frozen);
    let due = dbs.poll_timeout().unwrap();
    dbs.handle_timeout(due, &env.ctx());
    assert!(effects(&mut dbs).is_empty());
    backend.set_busy(&vol_path, false);
    dbs.handle_timeout(due.saturating_add(FREEZE_RETRY_INTERVAL), &env.ctx());
    assert_eq!(
        effects(&mut dbs),
        vec![DbEffect::Complete {
            id,
            reply: DbReply::status(0)
        }]
    );
    assert!(dbs.all_frozen());
    ok(&mut dbs, &env, ControlOpcode::Freeze, &[]);

    // An inactive node's volatile records are invalid: a pull returns none of them.
    for db_id in [vol, per] {
        ok(
            &mut dbs,
            &env,
            ControlOpcode::DbTransactionStart,
            &transdb(db_id, 3),
        );
    }
    assert_eq!(
        u32_of(&ok(&mut dbs, &env, ControlOpcode::DbPull, &pulldb(vol, 1))),
        0
    );
    assert_eq!(
        u32_of(&ok(&mut dbs, &env, ControlOpcode::DbPull, &pulldb(per, 1))),
        1
    );
    assert_eq!(effects(&mut dbs).len(), 1);

    // A database attached after the freeze joins on the next FREEZE.
    let late = attach(&mut dbs, &env, ControlOpcode::DbAttach, "late.tdb");
    assert_eq!(dbs.get(late).unwrap().freeze_mode(), FreezeMode::None);
    ok(&mut dbs, &env, ControlOpcode::Freeze, &[]);
    assert_eq!(dbs.get(late).unwrap().freeze_mode(), FreezeMode::Frozen);
    assert!(dbs.all_frozen());

    dbs.thaw_all();
    assert!(dbs
        .databases()
        .all(|db| db.freeze_mode() == FreezeMode::None));
    let thawed: Vec<DbEffect> = effects(&mut dbs);
    assert_eq!(thawed.len(), 3);
    // Thawing clears the invalid mark.
    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &vol.to_ne_bytes());
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(vol, 4),
    );
    assert_eq!(
        u32_of(&ok(&mut dbs, &env, ControlOpcode::DbPull, &pulldb(vol, 1))),
        1
    );
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &vol.to_ne_bytes());

    // Becoming inactive: generations drop to INVALID_GENERATION and everything freezes.
    dbs.become_inactive(T0);
    assert!(dbs.all_frozen());
    assert!(dbs.databases().all(|db| db.generation() == 1));
    assert!(!dbs.generations_match(7));
}

#[test]
fn readonly_and_sticky_flags() {
    let (backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let vol = attach(&mut dbs, &env, ControlOpcode::DbAttach, "v.tdb");
    let per = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    for opcode in [ControlOpcode::SetDbReadonly, ControlOpcode::SetDbSticky] {
        fails(&mut dbs, &env, opcode, &per.to_ne_bytes());
        fails(&mut dbs, &env, opcode, &1u32.to_ne_bytes());
        ok(&mut dbs, &env, opcode, &vol.to_ne_bytes());
        ok(&mut dbs, &env, opcode, &vol.to_ne_bytes());
    }
    let map = DbidMap::from_bytes_exact(&ok(&mut dbs, &env, ControlOpcode::GetDbmap, &[])).unwrap();
    assert_eq!(
        map.dbs.iter().map(|d| d.flags).collect::<Vec<_>>(),
        [db_flags::PERSISTENT, db_flags::READONLY | db_flags::STICKY]
    );
    // The tracking database sits next to the database and is emptied by a recovery.
    let ro = PathBuf::from("/mem/volatile/v.tdb.0.RO");
    backend.put_file(&ro, [(b"k".to_vec(), b"\x01".to_vec())]);
    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &vol.to_ne_bytes());
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(vol, 2),
    );
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(vol, PUSH_SRVID),
    );
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbPushConfirm,
        &vol.to_ne_bytes(),
    );
    assert_eq!(backend.file_records(&ro).unwrap(), vec![]);
}

#[test]
fn database_paths_keep_the_configured_directory_text() {
    let backend = MemoryBackend::new();
    let mut config = memory_config(3);
    config.volatile_dir = PathBuf::from("/mem/volatile/");
    let mut dbs = DatabaseSet::new(config, Box::new(backend)).unwrap();
    let env = Env::new();
    let id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "x.tdb");
    // Stock prints "%s/%s.%u": a trailing slash in the configuration stays.
    assert_eq!(
        ok(&mut dbs, &env, ControlOpcode::Getdbpath, &id.to_ne_bytes()),
        b"/mem/volatile//x.tdb.3\0"
    );
}

#[test]
fn seqnum_changes_are_broadcast_once_per_interval_and_remote_bumps_are_not_echoed() {
    let (backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "brlock.tdb");
    let path = dbs.get(db_id).unwrap().path().to_path_buf();
    let at = |ms: u64| T0.saturating_add(std::time::Duration::from_millis(ms));

    fails(
        &mut dbs,
        &env,
        ControlOpcode::EnableSeqnum,
        &0xdead_beef_u32.to_ne_bytes(),
    );
    ok(
        &mut dbs,
        &env,
        ControlOpcode::EnableSeqnum,
        &db_id.to_ne_bytes(),
    );
    assert_eq!(dbs.poll_timeout(), Some(at(1000)));

    // A local writer moves the number: the next check tells the active nodes, once.
    backend.bump_seqnum(&path);
    dbs.handle_timeout(at(999), &env.ctx());
    assert_eq!(effects(&mut dbs), vec![]);
    dbs.handle_timeout(at(1000), &env.ctx());
    assert_eq!(
        effects(&mut dbs),
        vec![DbEffect::BroadcastActiveControl {
            opcode: ControlOpcode::UpdateSeqnum,
            data: db_id.to_ne_bytes().to_vec(),
        }]
    );
    dbs.handle_timeout(at(2000), &env.ctx());
    assert_eq!(effects(&mut dbs), vec![]);

    // Another node's change bumps the local number but is not sent back.
    ok(
        &mut dbs,
        &env,
        ControlOpcode::UpdateSeqnum,
        &db_id.to_ne_bytes(),
    );
    assert_eq!(backend.seqnum(&path), 2);
    dbs.handle_timeout(at(3000), &env.ctx());
    assert_eq!(effects(&mut dbs), vec![]);

    // Our own broadcast coming back is ignored.
    let db_id_bytes = db_id.to_ne_bytes();
    let own = DbRequest {
        srcnode: 0,
        ..request(ControlOpcode::UpdateSeqnum, &db_id_bytes)
    };
    let reply = dbs.handle_control(T0, &own, &env.ctx());
    assert_eq!(reply, DbControlOutcome::Reply(DbReply::status(0)));
    assert_eq!(backend.seqnum(&path), 2);
    fails(
        &mut dbs,
        &env,
        ControlOpcode::UpdateSeqnum,
        &7u32.to_ne_bytes(),
    );
}

#[test]
fn seqnum_of_a_real_tdb_moves_with_remote_updates() {
    let (_dir, mut dbs) = libtdb_set("seqnum-watch", 0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    ok(
        &mut dbs,
        &env,
        ControlOpcode::EnableSeqnum,
        &db_id.to_ne_bytes(),
    );
    let before = dbs.get_mut(db_id).unwrap().store_mut().seqnum();
    ok(
        &mut dbs,
        &env,
        ControlOpcode::UpdateSeqnum,
        &db_id.to_ne_bytes(),
    );
    assert_ne!(dbs.get_mut(db_id).unwrap().store_mut().seqnum(), before);
}

// ---- vacuuming ----------------------------------------------------------------------------

/// A key whose lmaster over the vnn map `[0, 1]` is `lmaster`.
fn key_with_lmaster(lmaster: u32, tag: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("{tag}-{i}").into_bytes())
        .find(|k| hash::lmaster(hash::ctdb_hash(k), &[0, 1]) == Some(lmaster))
        .unwrap()
}

fn put(dbs: &mut DatabaseSet, db_id: u32, key: &[u8], h: LtdbHeader, data: &[u8]) {
    let db = dbs.get_mut(db_id).unwrap();
    db.store_mut().store(key, &[&h.to_bytes(), data]).unwrap();
}

fn has(dbs: &mut DatabaseSet, db_id: u32, key: &[u8]) -> bool {
    dbs.get_mut(db_id)
        .unwrap()
        .store_mut()
        .fetch(key)
        .unwrap()
        .is_some()
}

fn schedule_data(db_id: u32, key: &[u8], h: LtdbHeader) -> Vec<u8> {
    crate::protocol::types::KeyData {
        db_id,
        header: h,
        key: key.to_vec(),
    }
    .to_bytes()
}

fn vacuum_at(dbs: &mut DatabaseSet, env: &Env, secs: u64, peers: &[u32]) -> Vec<DbEffect> {
    let now = T0.saturating_add(std::time::Duration::from_secs(secs));
    dbs.run_due_vacuums(
        now,
        env.recovery_mode != RECOVERY_NORMAL,
        &env.vnn_map.map,
        peers,
        (10, 60),
    );
    effects(dbs)
}

#[test]
fn vacuuming_deletes_what_is_safe_and_hands_the_rest_to_the_lmaster() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    assert_eq!(
        dbs.vacuum_timeout(),
        Some(T0.saturating_add(std::time::Duration::from_secs(10)))
    );

    // Ours as lmaster and dmaster, never carried data elsewhere: deleted at once.
    let local = key_with_lmaster(0, "local");
    // Deleted here but revived with data before the run: stays.
    let revived = key_with_lmaster(0, "revived");
    // Another node is lmaster: goes to it in a VACUUM_FETCH.
    let remote = key_with_lmaster(1, "remote");
    // Migrated away and back since it was queued (RSN moved): stays.
    let moved = key_with_lmaster(0, "moved");
    for key in [&local, &revived, &remote, &moved] {
        put(&mut dbs, db_id, key, header(5, 0, 0), &[]);
        ok(
            &mut dbs,
            &env,
            ControlOpcode::ScheduleForDeletion,
            &schedule_data(db_id, key, header(5, 0, 0)),
        );
    }
    fails(
        &mut dbs,
        &env,
        ControlOpcode::ScheduleForDeletion,
        &[1, 2, 3],
    );
    put(&mut dbs, db_id, &revived, header(6, 0, 0), b"alive");
    put(&mut dbs, db_id, &moved, header(9, 0, 0), &[]);

    assert_eq!(vacuum_at(&mut dbs, &env, 9, &[1]), vec![]);
    let got = vacuum_at(&mut dbs, &env, 10, &[1]);
    assert!(!has(&mut dbs, db_id, &local));
    assert!(has(&mut dbs, db_id, &revived));
    assert!(has(&mut dbs, db_id, &moved));
    assert!(has(&mut dbs, db_id, &remote), "only the lmaster deletes it");
    let [DbEffect::SendControl {
        destnode: 1,
        opcode: ControlOpcode::VacuumFetch,
        data,
    }] = got.as_slice()
    else {
        panic!("expected one VACUUM_FETCH to node 1: {got:?}");
    };
    let fetch = RecBuffer::from_bytes_exact(data).unwrap();
    assert_eq!(fetch.db_id, db_id);
    let keys: Vec<&[u8]> = fetch.records.iter().map(|r| r.key.as_slice()).collect();
    assert_eq!(keys, vec![remote.as_slice()]);
    let counts = dbs.get(db_id).unwrap().vacuum_state().last_counts;
    assert_eq!(
        (counts.deleted, counts.skipped, counts.to_fetch_list),
        (1, 2, 1)
    );
    // The queue was consumed.
    assert_eq!(vacuum_at(&mut dbs, &env, 20, &[1]), vec![]);
}

#[test]
fn records_migrated_with_data_need_every_node_to_agree() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "brlock.tdb");
    let agreed = key_with_lmaster(0, "agreed");
    let refused = key_with_lmaster(0, "refused");
    let migrated = header(7, 0, REC_FLAG_MIGRATED_WITH_DATA);
    for key in [&agreed, &refused] {
        put(&mut dbs, db_id, key, migrated, &[]);
        ok(
            &mut dbs,
            &env,
            ControlOpcode::ScheduleForDeletion,
            &schedule_data(db_id, key, migrated),
        );
    }
    let got = vacuum_at(&mut dbs, &env, 10, &[1, 2]);
    let rounds: Vec<(u32, u64, Vec<u8>)> = got
        .into_iter()
        .map(|e| match e {
            DbEffect::TryDeleteRecords {
                pnn,
                db_id: id,
                round,
                data,
            } if id == db_id => (pnn, round, data),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(rounds.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2]);
    let asked = RecBuffer::from_bytes_exact(&rounds[0].2).unwrap();
    assert_eq!(asked.records.len(), 2);
    // Nothing is deleted before every node answered.
    let none = RecBuffer {
        db_id,
        records: vec![],
    };
    let map = env.vnn_map.map.clone();
    dbs.on_try_delete_reply(db_id, rounds[0].1, 1, 0, &none.to_bytes(), &map);
    assert!(has(&mut dbs, db_id, &agreed));
    let kept = RecBuffer {
        db_id,
        records: vec![RecData::with_header(db_id, &migrated, &refused, &[])],
    };
    dbs.on_try_delete_reply(db_id, rounds[1].1, 2, 0, &kept.to_bytes(), &map);
    assert!(!has(&mut dbs, db_id, &agreed));
    assert!(has(&mut dbs, db_id, &refused), "node 2 kept its copy");
}

#[test]
fn try_delete_records_refuses_newer_copies_and_own_records() {
    let (_backend, mut dbs) = memory_set(1);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    let old_copy = key_with_lmaster(0, "old");
    let newer_copy = key_with_lmaster(0, "newer");
    let ours = key_with_lmaster(0, "ours");
    let we_are_lmaster = key_with_lmaster(1, "lm");
    put(&mut dbs, db_id, &old_copy, header(3, 0, 0), b"stale");
    put(&mut dbs, db_id, &newer_copy, header(9, 0, 0), b"new");
    put(&mut dbs, db_id, &ours, header(2, 1, 0), &[]);
    put(&mut dbs, db_id, &we_are_lmaster, header(2, 0, 0), &[]);
    let asked = RecBuffer {
        db_id,
        records: [&old_copy, &newer_copy, &ours, &we_are_lmaster]
            .iter()
            .map(|k| RecData::with_header(db_id, &header(5, 0, 0), k, &[]))
            .collect(),
    };
    let reply = ok(
        &mut dbs,
        &env,
        ControlOpcode::TryDeleteRecords,
        &asked.to_bytes(),
    );
    let kept = RecBuffer::from_bytes_exact(&reply).unwrap();
    let kept: Vec<&[u8]> = kept.records.iter().map(|r| r.key.as_slice()).collect();
    assert_eq!(
        kept,
        vec![
            newer_copy.as_slice(),
            ours.as_slice(),
            we_are_lmaster.as_slice()
        ]
    );
    assert!(!has(&mut dbs, db_id, &old_copy));
    fails(&mut dbs, &env, ControlOpcode::TryDeleteRecords, &[0; 3]);
}

#[test]
fn no_vacuuming_during_recovery_and_a_wipe_forgets_the_queue() {
    let (_backend, mut dbs) = memory_set(0);
    let mut env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    let key = key_with_lmaster(0, "k");
    put(&mut dbs, db_id, &key, header(1, 0, 0), &[]);
    let data = schedule_data(db_id, &key, header(1, 0, 0));
    ok(&mut dbs, &env, ControlOpcode::ScheduleForDeletion, &data);
    env.recovery_mode = RECOVERY_ACTIVE;
    vacuum_at(&mut dbs, &env, 10, &[]);
    assert!(has(&mut dbs, db_id, &key));
    assert_eq!(dbs.get(db_id).unwrap().vacuum_state().queued(), 1);
    dbs.get_mut(db_id).unwrap().vacuum.clear();
    env.recovery_mode = RECOVERY_NORMAL;
    vacuum_at(&mut dbs, &env, 20, &[]);
    assert!(
        has(&mut dbs, db_id, &key),
        "a forgotten record waits for a full run"
    );
}

#[test]
fn a_full_run_finds_empty_records_the_queue_missed() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    let key = key_with_lmaster(0, "lost");
    let other_dmaster = key_with_lmaster(0, "theirs");
    put(&mut dbs, db_id, &key, header(4, 0, 0), &[]);
    put(&mut dbs, db_id, &other_dmaster, header(4, 1, 0), &[]);
    let now = |s| T0.saturating_add(std::time::Duration::from_secs(s));
    // Fast path count 1: the second run is a full one.
    for (i, secs) in [10u64, 20, 30].into_iter().enumerate() {
        dbs.run_due_vacuums(now(secs), false, &env.vnn_map.map, &[], (10, 1));
        effects(&mut dbs);
        if i == 0 {
            assert!(has(&mut dbs, db_id, &key));
        }
    }
    assert!(!has(&mut dbs, db_id, &key));
    assert!(has(&mut dbs, db_id, &other_dmaster));
}

#[test]
fn storing_an_empty_record_as_dmaster_queues_it_and_data_unqueues_it() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    let key = key_with_lmaster(0, "s");
    let db = dbs.get_mut(db_id).unwrap();
    db.ltdb_store(0, &env.ctx(), &key, &header(1, 0, 0), &[])
        .unwrap();
    assert_eq!(db.vacuum_state().queued(), 1);
    db.ltdb_store(0, &env.ctx(), &key, &header(2, 0, 0), b"x")
        .unwrap();
    assert_eq!(db.vacuum_state().queued(), 0);
}

mod db_vacuum;

#[test]
#[ignore = "measurement, run by hand"]
fn measure_vacuum_scan_step_hold_time() {
    let (_dir, mut dbs) = libtdb_set("scan-measure", 0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "measure.tdb");
    for i in 0..200_000u32 {
        let key = format!("k{i}");
        let data: &[u8] = if i % 2 == 0 { b"" } else { b"some data here" };
        put(&mut dbs, db_id, key.as_bytes(), header(1, 0, 0), data);
    }
    let store = dbs.get_mut(db_id).unwrap().store_mut();
    let mut chain = 0;
    let mut worst = std::time::Duration::ZERO;
    let mut steps = 0;
    #[allow(clippy::disallowed_methods)]
    loop {
        let t = std::time::Instant::now();
        let step = store.traverse_chains(chain, 4096, &mut |_, _| {}).unwrap();
        worst = worst.max(t.elapsed());
        steps += 1;
        match step {
            storage::ChainStep::More(c) => chain = c,
            _ => break,
        }
    }
    eprintln!("MEASURE steps={steps} worst_step={worst:?}");
}

/// After WIPE_DATABASE the recovery transaction stores pushed records with `TDB_INSERT`; a key
/// pushed twice (a helper that sends duplicates) still ends with the last copy, and a record
/// stored before the wipe is gone.
#[test]
fn pushes_after_a_wipe_insert_and_fall_back_to_replace_for_duplicates() {
    let (_dir, mut dbs) = libtdb_set("push-insert", 0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "ins.tdb");
    let id = db_id.to_ne_bytes();
    put(&mut dbs, db_id, b"old", header(3, 1, 0), b"before the wipe");
    open_push(&mut dbs, &env, db_id, true);
    let first: &[(&[u8], LtdbHeader, &[u8])] = &[
        (b"a", header(5, 1, 0), b"first a"),
        (b"b", header(5, 1, 0), b"only b"),
        (b"a", header(6, 1, 0), b"second a, longer than the first"),
    ];
    let second: &[(&[u8], LtdbHeader, &[u8])] = &[(b"a", header(7, 1, 0), b"third a")];
    assert!(dbs.on_message(PUSH_SRVID, &rec_buffer(db_id, first), &env.ctx()));
    assert!(dbs.on_message(PUSH_SRVID, &rec_buffer(db_id, second), &env.ctx()));
    let confirmed = ok(&mut dbs, &env, ControlOpcode::DbPushConfirm, &id);
    assert_eq!(u32_of(&confirmed), 4);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionCommit,
        &transdb(db_id, TID),
    );
    let store = dbs.get_mut(db_id).unwrap().store_mut();
    let a = store.fetch(b"a").unwrap().unwrap();
    assert_eq!(&a[LTDB_HEADER_LEN..], b"third a");
    assert_eq!(LtdbHeader::pull(&a).unwrap().0.rsn, 7);
    let b = store.fetch(b"b").unwrap().unwrap();
    assert_eq!(&b[LTDB_HEADER_LEN..], b"only b");
    assert_eq!(store.fetch(b"old").unwrap(), None);
    assert_eq!(store.check_integrity(), Ok(()));
    ok(&mut dbs, &env, ControlOpcode::DbThaw, &id);

    // After the commit, stores replace again (no wipe in effect outside the transaction).
    put(&mut dbs, db_id, b"a", header(9, 1, 0), b"client a");
    let a = dbs.get_mut(db_id).unwrap().store_mut().fetch(b"a").unwrap();
    assert_eq!(&a.unwrap()[LTDB_HEADER_LEN..], b"client a");
}

/// A push buffer is checked whole before anything is stored: a truncated or inconsistent one
/// stores nothing and fails the push; one whose record lacks an ltdb header stores the records
/// before it, as stock does.
#[test]
fn malformed_push_buffers_fail_the_push() {
    type Spoil = fn(Vec<u8>) -> Vec<u8>;
    let cases: [(&str, Spoil); 3] = [
        ("truncated", |mut b| {
            b.truncate(b.len() - 1);
            b
        }),
        ("record length", |mut b| {
            // The first record's length word no longer matches its key and data lengths.
            b[8] ^= 1;
            b
        }),
        ("count beyond the records", |mut b| {
            b[4] = 3;
            b
        }),
    ];
    for (what, spoil) in cases {
        let (_backend, mut dbs) = memory_set(0);
        let env = Env::new();
        let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "bad.tdb");
        let id = db_id.to_ne_bytes();
        open_push(&mut dbs, &env, db_id, false);
        let records: &[(&[u8], LtdbHeader, &[u8])] = &[
            (b"x", header(1, 0, 0), b"x data"),
            (b"y", header(1, 0, 0), b"y data"),
        ];
        let buffer = spoil(rec_buffer(db_id, records));
        assert!(dbs.on_message(PUSH_SRVID, &buffer, &env.ctx()), "{what}");
        let good = rec_buffer(db_id, &records[..1]);
        assert!(dbs.on_message(PUSH_SRVID, &good, &env.ctx()), "{what}");
        let confirmed = ok(&mut dbs, &env, ControlOpcode::DbPushConfirm, &id);
        assert_eq!(
            u32_of(&confirmed),
            0,
            "{what}: a failed push counts nothing"
        );
        assert!(
            !has(&mut dbs, db_id, b"y"),
            "{what}: nothing of a malformed buffer is stored"
        );
    }

    // A record too short for its ltdb header: the ones before it are stored.
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "short.tdb");
    let id = db_id.to_ne_bytes();
    ok(&mut dbs, &env, ControlOpcode::DbFreeze, &id);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbTransactionStart,
        &transdb(db_id, TID),
    );
    ok(
        &mut dbs,
        &env,
        ControlOpcode::DbPushStart,
        &pulldb(db_id, PUSH_SRVID),
    );
    let buffer = RecBuffer {
        db_id,
        records: vec![
            RecData::with_header(0, &header(1, 0, 0), b"kept", b"v"),
            RecData {
                reqid: 0,
                key: b"short".to_vec(),
                data: vec![0; LTDB_HEADER_LEN - 1],
            },
            RecData::with_header(0, &header(1, 0, 0), b"after", b"v"),
        ],
    }
    .to_bytes();
    assert!(dbs.on_message(PUSH_SRVID, &buffer, &env.ctx()));
    assert_eq!(
        u32_of(&ok(&mut dbs, &env, ControlOpcode::DbPushConfirm, &id)),
        0
    );
    assert!(has(&mut dbs, db_id, b"kept"));
    assert!(!has(&mut dbs, db_id, b"short"));
    assert!(!has(&mut dbs, db_id, b"after"));
}
