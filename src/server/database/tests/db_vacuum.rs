//! DB_VACUUM: a vacuum run on demand, answered when it is over.

use super::*;
use crate::protocol::types::DbVacuum;

fn request_vacuum(db_id: u32, full: bool) -> Vec<u8> {
    DbVacuum {
        db_id,
        full_vacuum_run: full,
    }
    .to_bytes()
}

fn completion(got: &[DbEffect]) -> Option<(DeferredId, i32)> {
    got.iter().find_map(|e| match e {
        DbEffect::Complete { id, reply } => Some((*id, reply.status)),
        _ => None,
    })
}

#[test]
fn db_vacuum_runs_now_and_answers_when_the_run_is_over() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "locking.tdb");
    // An empty record only a full run finds (it was never scheduled).
    let empty = key_with_lmaster(0, "empty");
    put(&mut dbs, db_id, &empty, header(5, 0, 0), &[]);

    let DbControlOutcome::Deferred(id) = outcome(
        &mut dbs,
        &env,
        ControlOpcode::DbVacuum,
        &request_vacuum(db_id, true),
    ) else {
        panic!("DB_VACUUM must wait for its run");
    };
    // A second request while one waits collides.
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbVacuum,
        &request_vacuum(db_id, false),
    );
    assert_eq!(dbs.vacuum_timeout(), Some(T0), "the run is due now");
    let got = vacuum_at(&mut dbs, &env, 0, &[]);
    assert_eq!(completion(&got), Some((id, 0)), "{got:?}");
    assert!(!has(&mut dbs, db_id, &empty), "the full run deleted it");
    // The regular schedule goes on from here.
    assert_eq!(
        dbs.vacuum_timeout(),
        Some(T0.saturating_add(std::time::Duration::from_secs(10)))
    );
}

#[test]
fn db_vacuum_with_a_delete_round_answers_after_the_other_nodes() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "brlock.tdb");
    let key = key_with_lmaster(0, "migrated");
    let migrated = header(7, 0, REC_FLAG_MIGRATED_WITH_DATA);
    put(&mut dbs, db_id, &key, migrated, &[]);
    ok(
        &mut dbs,
        &env,
        ControlOpcode::ScheduleForDeletion,
        &schedule_data(db_id, &key, migrated),
    );
    let DbControlOutcome::Deferred(id) = outcome(
        &mut dbs,
        &env,
        ControlOpcode::DbVacuum,
        &request_vacuum(db_id, false),
    ) else {
        panic!("DB_VACUUM must wait");
    };
    let got = vacuum_at(&mut dbs, &env, 0, &[1]);
    assert_eq!(
        completion(&got),
        None,
        "waits for TRY_DELETE_RECORDS: {got:?}"
    );
    let round = got
        .iter()
        .find_map(|e| match e {
            DbEffect::TryDeleteRecords { round, .. } => Some(*round),
            _ => None,
        })
        .expect("a TRY_DELETE_RECORDS round");
    let none = RecBuffer {
        db_id,
        records: vec![],
    };
    dbs.on_try_delete_reply(db_id, round, 1, 0, &none.to_bytes(), &env.vnn_map.map);
    assert_eq!(completion(&effects(&mut dbs)), Some((id, 0)));
    assert!(!has(&mut dbs, db_id, &key));
}

#[test]
fn db_vacuum_is_refused_for_unknown_persistent_or_recovering_databases() {
    let (_backend, mut dbs) = memory_set(0);
    let mut env = Env::new();
    let volatile = attach(&mut dbs, &env, ControlOpcode::DbAttach, "v.tdb");
    let persistent = attach(&mut dbs, &env, ControlOpcode::DbAttachPersistent, "p.tdb");
    for data in [
        request_vacuum(0xdead_beef, false),
        request_vacuum(persistent, false),
        vec![0; 4],
    ] {
        fails(&mut dbs, &env, ControlOpcode::DbVacuum, &data);
    }
    env.recovery_mode = RECOVERY_ACTIVE;
    fails(
        &mut dbs,
        &env,
        ControlOpcode::DbVacuum,
        &request_vacuum(volatile, false),
    );
}

#[test]
fn a_vacuum_run_makes_the_database_due_for_one_repack_check_at_a_time() {
    let (_backend, mut dbs) = memory_set(0);
    let env = Env::new();
    let a = attach(&mut dbs, &env, ControlOpcode::DbAttach, "a.tdb");
    let b = attach(&mut dbs, &env, ControlOpcode::DbAttach, "b.tdb");
    assert_eq!(dbs.next_repack(100), None, "nothing vacuumed yet");
    vacuum_at(&mut dbs, &env, 10, &[]);
    assert_eq!(
        dbs.next_repack(0),
        None,
        "RepackLimit 0 switches repacking off"
    );
    let first = dbs.next_repack(100).expect("a repack check");
    assert_eq!(first.limit, 100);
    assert_eq!(first.args()[0], repack::REPACK_HELPER_ARG);
    assert_eq!(dbs.repack_running(), Some(first.db_id));
    assert_eq!(dbs.next_repack(100), None, "one helper at a time");
    dbs.repack_finished(first.db_id, Some(0));
    let second = dbs.next_repack(100).expect("the other database");
    assert_ne!(second.db_id, first.db_id);
    assert!([a, b].contains(&second.db_id));
    dbs.repack_finished(second.db_id, None);
    assert_eq!(dbs.next_repack(100), None, "each run is checked once");
}

#[test]
fn the_repack_helper_repacks_only_above_the_limit() {
    use crate::common::tdb::{Tdb, TdbFlags};
    use crate::server::database::repack::{run_repack_helper, EXIT_NOT_NEEDED, EXIT_REPACKED};
    let dir = TempDir::new("repack-helper");
    let path = dir.config(0).volatile_dir.join("r.tdb");
    let tdb = Tdb::open(
        &path,
        7,
        TdbFlags::DEFAULT,
        libc::O_CREAT | libc::O_RDWR,
        0o600,
    )
    .unwrap();
    for i in 0..50u32 {
        tdb.store(&i.to_le_bytes(), &[7u8; 100], StoreMode::Replace)
            .unwrap();
    }
    for i in (0..50u32).step_by(2) {
        tdb.delete(&i.to_le_bytes()).unwrap();
    }
    let before = tdb.freelist_size().unwrap();
    assert!(before > 1, "deletes leave free space: {before}");
    // libtdb opens a file once per process: the helper runs with the file closed here.
    drop(tdb);
    let args = |limit: usize| {
        vec![
            path.display().to_string(),
            "0".to_string(),
            limit.to_string(),
        ]
    };
    assert_eq!(run_repack_helper(&args(before + 1)), EXIT_NOT_NEEDED);
    assert_eq!(run_repack_helper(&args(1)), EXIT_REPACKED);
    let tdb = Tdb::open(&path, 7, TdbFlags::DEFAULT, libc::O_RDWR, 0o600).unwrap();
    assert!(tdb.freelist_size().unwrap() < before);
    for i in 0..50u32 {
        let found = tdb.fetch(&i.to_le_bytes()).unwrap();
        assert_eq!(found.is_some(), i % 2 == 1, "key {i}");
    }
    assert_ne!(run_repack_helper(&["x".to_string()]), EXIT_REPACKED);
}

#[test]
fn a_freeze_stops_the_repack_helper() {
    let (_backend, mut dbs) = memory_set(0);
    let mut env = Env::new();
    let db_id = attach(&mut dbs, &env, ControlOpcode::DbAttach, "a.tdb");
    vacuum_at(&mut dbs, &env, 10, &[]);
    assert!(dbs.next_repack(100).is_some());
    env.recovery_mode = RECOVERY_ACTIVE;
    let _ = outcome(
        &mut dbs,
        &env,
        ControlOpcode::DbFreeze,
        &db_id.to_ne_bytes(),
    );
    assert!(effects(&mut dbs).contains(&DbEffect::StopRepack));
    // The helper's exit ends the repack; a frozen database is not checked again until it ran.
    dbs.repack_finished(db_id, None);
    assert_eq!(dbs.repack_running(), None);
    assert_eq!(dbs.next_repack(100), None);
}
