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
