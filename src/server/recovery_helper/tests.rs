//! The recovery sequence against a simulated cluster.

use super::fake::{db_id_of, FakeCluster, SEQNUM_KEY};
use super::recdb::pulled_copy_wins;
use super::recovery::{recover, Extensions, RecoveryError, RecoveryParams};
use crate::protocol::basic::Marshal;
use crate::protocol::control::{ControlRequestData, CTRL_FLAG_ATTACH_RECOVERY};
use crate::protocol::hash;
use crate::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN, REC_FLAG_MIGRATED_WITH_DATA};
use crate::protocol::opcode::ControlOpcode as Op;
use crate::protocol::srvid;
use crate::protocol::types::{
    capabilities, db_flags, node_flags, BanState, RecoveryMode, VnnMap, INVALID_GENERATION,
};
use crate::testing::Prng;
use std::collections::BTreeMap;

const GENERATION: u32 = 0x1234_5678;

/// Stock's behaviour: the tests here compare with it; the extensions have their own tests.
fn stock_params() -> RecoveryParams {
    RecoveryParams {
        generation: GENERATION,
        extensions: Extensions::STOCK,
    }
}

/// Every extension on.
fn ours_params() -> RecoveryParams {
    RecoveryParams {
        generation: GENERATION,
        extensions: Extensions {
            concurrent_pulls: true,
            ..Extensions::default()
        },
    }
}

fn run(cluster: &mut FakeCluster) -> Result<(), RecoveryError> {
    recover(cluster, &stock_params())
}

fn run_ours(cluster: &mut FakeCluster) -> Result<(), RecoveryError> {
    recover(cluster, &ours_params())
}

fn header(rsn: u64, dmaster: u32) -> LtdbHeader {
    LtdbHeader {
        rsn,
        dmaster,
        reserved1: 0,
        flags: 0,
    }
}

fn seqnum_value(seqnum: u64) -> Vec<u8> {
    seqnum.to_ne_bytes().to_vec()
}

/// Every node's copy of `name` after the recovery; all must be equal.
fn the_copy(cluster: &FakeCluster, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db_id = db_id_of(name);
    let first = cluster.nodes[0].dbs[&db_id].records.clone();
    for node in &cluster.nodes {
        let db = &node.dbs[&db_id];
        assert_eq!(db.records, first, "node {} differs", node.pnn);
        assert!(!db.frozen && db.transaction.is_none());
        assert_eq!(db.generation, GENERATION);
    }
    first
}

#[test]
fn volatile_databases_keep_the_highest_rsn_copy_of_each_key() {
    volatile_recoveries(Extensions::STOCK);
}

/// With the extensions: pulled concurrently (arriving interleaved), merged to the same
/// result, and each record pushed only to its lmaster, which becomes its dmaster.
#[test]
fn our_volatile_recovery_leaves_each_record_once_at_its_lmaster() {
    volatile_recoveries(ours_params().extensions);
    // The default: pulled one node after the other, pushed partitioned.
    volatile_recoveries(Extensions::default());
}

fn volatile_recoveries(extensions: Extensions) {
    let ours = extensions.partitioned_push;
    for seed in crate::testing::seeds(40) {
        let mut rng = Prng::new(seed);
        let nodes = 1 + rng.below(4) as u32;
        let local = rng.below(u64::from(nodes)) as u32;
        let mut cluster = FakeCluster::new(nodes, local);
        cluster.pull_chunk = 1 + rng.below(4) as usize;
        cluster.tunables.rec_buffer_size_limit = 64 + rng.below(400) as u32;
        // The model: pull node after node, in pnn order, applying stock's rule.
        let mut model: BTreeMap<Vec<u8>, (LtdbHeader, Vec<u8>)> = BTreeMap::new();
        for pnn in 0..nodes {
            let db = cluster.node(pnn).db("vol.tdb", 0);
            for k in 0..rng.below(12) {
                if rng.below(3) == 0 {
                    continue;
                }
                let key = format!("key{k}").into_bytes();
                let h = LtdbHeader {
                    rsn: rng.below(4),
                    dmaster: rng.below(u64::from(nodes)) as u32,
                    reserved1: 0,
                    flags: if rng.bool() { 0x0100_0000 } else { 0 },
                };
                let value = if rng.below(4) == 0 {
                    Vec::new()
                } else {
                    format!("{k}@{pnn}:{}", rng.u32()).into_bytes()
                };
                db.put(&key, h, &value);
                let wins = match model.get(&key) {
                    None => true,
                    Some((stored, _)) => pulled_copy_wins(&h, stored, local),
                };
                if wins {
                    model.insert(key, (h, value));
                }
            }
        }
        let params = RecoveryParams {
            generation: GENERATION,
            extensions,
        };
        recover(&mut cluster, &params).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        let vnnmap: Vec<u32> = (0..nodes).collect();
        let dmaster_of = |key: &[u8]| {
            if ours {
                hash::lmaster(hash::ctdb_hash(key), &vnnmap).unwrap()
            } else {
                local
            }
        };
        let got = if ours {
            // Every key exactly once cluster-wide, at its lmaster.
            let db_id = db_id_of("vol.tdb");
            let mut union = BTreeMap::new();
            for node in &cluster.nodes {
                let db = &node.dbs[&db_id];
                assert!(!db.frozen && db.transaction.is_none());
                assert_eq!(db.generation, GENERATION);
                for (key, data) in &db.records {
                    assert_eq!(dmaster_of(key), node.pnn, "seed {seed}: not at its lmaster");
                    assert!(
                        union.insert(key.clone(), data.clone()).is_none(),
                        "seed {seed}: a key on two nodes"
                    );
                }
            }
            union
        } else {
            the_copy(&cluster, "vol.tdb")
        };
        let expected: BTreeMap<Vec<u8>, Vec<u8>> = model
            .into_iter()
            .filter(|(_, (_, value))| !value.is_empty())
            .map(|(key, (mut h, value))| {
                h.dmaster = dmaster_of(&key);
                h.flags = (h.flags | REC_FLAG_MIGRATED_WITH_DATA) & !0x0f00_0000;
                let mut data = h.to_bytes();
                data.extend_from_slice(&value);
                (key, data)
            })
            .collect();
        assert_eq!(got, expected, "seed {seed}");
        for node in &cluster.nodes {
            assert_eq!(node.recmode, RecoveryMode::Normal, "seed {seed}");
            assert_eq!(node.vnnmap.generation, GENERATION);
            assert_eq!(node.recoveries_ended, 1);
        }
    }
}

#[test]
fn persistent_databases_come_whole_from_the_highest_seqnum() {
    let mut cluster = FakeCluster::new(3, 1);
    for (pnn, seqnum) in [(0, 5u64), (1, 3), (2, 5)] {
        let db = cluster.node(pnn).db("pers.tdb", db_flags::PERSISTENT);
        db.put(SEQNUM_KEY, header(seqnum, 9), &seqnum_value(seqnum));
        db.put(b"common", header(1, 7), format!("from {pnn}").as_bytes());
        db.put(format!("only-{pnn}").as_bytes(), header(1, 7), b"x");
        db.put(b"deleted", header(9, 7), b"");
    }
    run(&mut cluster).unwrap();
    let got = the_copy(&cluster, "pers.tdb");
    // Node 0 is the first with the highest seqnum; headers are kept as they were.
    let keys: Vec<&[u8]> = got.keys().map(Vec::as_slice).collect();
    assert_eq!(keys, vec![SEQNUM_KEY, b"common", b"only-0"]);
    let common = &got[b"common".as_slice()];
    assert_eq!(&common[LTDB_HEADER_LEN..], b"from 0");
    assert_eq!(LtdbHeader::pull(common).unwrap().0, header(1, 7));
    // Only node 0 was pulled from.
    let pulls: Vec<u32> = cluster
        .sent
        .iter()
        .filter(|s| s.opcode == Op::DbPull)
        .map(|s| s.pnn)
        .collect();
    assert_eq!(pulls, vec![0]);
}

#[test]
fn a_seqnum_tie_goes_to_a_node_of_the_last_generation() {
    // Node 1 comes back with a commit numbered like the one nodes 0 and 2 made while it was
    // away; node 0 has fallen behind (say, it missed that commit), and the leader (node 2)
    // knows nodes 0 and 2 as the last generation.
    let build = || {
        let mut cluster = FakeCluster::new(3, 2);
        for (pnn, seqnum) in [(0, 6u64), (1, 7), (2, 7)] {
            let db = cluster.node(pnn).db("pers.tdb", db_flags::PERSISTENT);
            db.put(SEQNUM_KEY, header(seqnum, 9), &seqnum_value(seqnum));
            db.put(b"k", header(seqnum, 9), format!("from {pnn}").as_bytes());
        }
        for pnn in 0..3 {
            cluster.node(pnn).vnnmap = VnnMap {
                generation: 77,
                map: vec![0, 2],
            };
        }
        cluster
    };
    let value = |cluster: &FakeCluster| {
        let got = the_copy(cluster, "pers.tdb");
        got[b"k".as_slice()][LTDB_HEADER_LEN..].to_vec()
    };
    let mut ours = build();
    run_ours(&mut ours).unwrap();
    assert_eq!(value(&ours), b"from 2");
    let mut stock = build();
    run(&mut stock).unwrap();
    assert_eq!(value(&stock), b"from 1", "stock takes the lowest pnn");
    // A leader without a generation (just started) breaks the tie as stock does.
    let mut fresh = build();
    fresh.node(2).vnnmap.generation = INVALID_GENERATION;
    run_ours(&mut fresh).unwrap();
    assert_eq!(value(&fresh), b"from 1");
}

#[test]
fn replicated_databases_are_pulled_by_seqnum_but_rewritten_like_volatile_ones() {
    let mut cluster = FakeCluster::new(2, 1);
    for pnn in 0..2 {
        let db = cluster.node(pnn).db("rep.tdb", db_flags::REPLICATED);
        db.put(SEQNUM_KEY, header(1, 0), &seqnum_value(u64::from(pnn) + 1));
        db.put(b"k", header(4, 0), format!("v{pnn}").as_bytes());
    }
    run(&mut cluster).unwrap();
    let got = the_copy(&cluster, "rep.tdb");
    let k = &got[b"k".as_slice()];
    assert_eq!(&k[LTDB_HEADER_LEN..], b"v1");
    let h = LtdbHeader::pull(k).unwrap().0;
    assert_eq!((h.dmaster, h.flags), (1, REC_FLAG_MIGRATED_WITH_DATA));
}

#[test]
fn the_control_sequence_is_stocks() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.node(0).db("a.tdb", 0).put(b"k", header(1, 0), b"v");
    cluster.node(1).db("a.tdb", 0);
    run(&mut cluster).unwrap();
    let all = vec![0, 1];
    let expected = vec![
        (Op::GetAllTunables, vec![0]),
        (Op::GetNodemap, vec![0]),
        (Op::GetNodemap, all.clone()),
        (Op::GetCapabilities, all.clone()),
        (Op::GetDbmap, all.clone()),
        (Op::SetRecmode, all.clone()),
        (Op::StartRecovery, all.clone()),
        (Op::Setvnnmap, all.clone()),
        (Op::GetDbname, all.clone()),
        (Op::Getdbpath, vec![0]),
        (Op::DbFreeze, all.clone()),
        (Op::DbTransactionStart, all.clone()),
        (Op::RegisterSrvid, vec![0]),
        (Op::DbPull, vec![0]),
        (Op::DeregisterSrvid, vec![0]),
        (Op::RegisterSrvid, vec![0]),
        (Op::DbPull, vec![1]),
        (Op::DeregisterSrvid, vec![0]),
        (Op::WipeDatabase, all.clone()),
        (Op::DbPushStart, all.clone()),
        (Op::DbPushConfirm, all.clone()),
        (Op::DbTransactionCommit, all.clone()),
        (Op::DbThaw, all.clone()),
        (Op::SetRecmode, all.clone()),
        (Op::EndRecovery, all),
    ];
    assert_eq!(cluster.trace(), expected);
    // The srvids: one per pull and one for the push, counting up from CTDB_SRVID_RECOVERY.
    let srvids: Vec<u64> = cluster
        .sent
        .iter()
        .filter_map(|s| match &s.data {
            ControlRequestData::PulldbExt(ext) => Some(ext.srvid),
            _ => None,
        })
        .collect();
    assert_eq!(
        srvids,
        vec![
            srvid::RECOVERY + 1,
            srvid::RECOVERY + 2,
            srvid::RECOVERY + 3,
            srvid::RECOVERY + 3
        ]
    );
    // One push message per node, with the one record.
    assert_eq!(
        cluster.messages,
        vec![(0, srvid::RECOVERY + 3, 1), (1, srvid::RECOVERY + 3, 1)]
    );
    let transdb_tids: Vec<u32> = cluster
        .sent
        .iter()
        .filter_map(|s| match &s.data {
            ControlRequestData::Transdb(t) => Some(t.tid),
            _ => None,
        })
        .collect();
    assert!(transdb_tids.iter().all(|&tid| tid == GENERATION));
}

#[test]
fn missing_databases_are_attached_for_recovery() {
    let mut cluster = FakeCluster::new(3, 2);
    cluster.node(0).db("p.tdb", db_flags::PERSISTENT);
    cluster.node(1).db("v.tdb", 0).put(b"k", header(2, 1), b"v");
    cluster.node(2).db("r.tdb", db_flags::REPLICATED);
    run(&mut cluster).unwrap();
    let attaches: Vec<(Op, u32, String)> = cluster
        .sent
        .iter()
        .filter(|s| {
            matches!(
                s.opcode,
                Op::DbAttach | Op::DbAttachPersistent | Op::DbAttachReplicated
            )
        })
        .map(|s| {
            assert_eq!(s.flags, CTRL_FLAG_ATTACH_RECOVERY);
            let ControlRequestData::DbName(name) = &s.data else {
                panic!("attach without a name");
            };
            (s.opcode, s.pnn, name.clone())
        })
        .collect();
    let mut expected = vec![
        (Op::DbAttachPersistent, 1, "p.tdb".to_string()),
        (Op::DbAttachPersistent, 2, "p.tdb".to_string()),
        (Op::DbAttach, 0, "v.tdb".to_string()),
        (Op::DbAttach, 2, "v.tdb".to_string()),
        (Op::DbAttachReplicated, 0, "r.tdb".to_string()),
        (Op::DbAttachReplicated, 1, "r.tdb".to_string()),
    ];
    // Databases are recovered in the order of the db map union (node 0's first).
    let order: Vec<u32> = cluster.nodes[0].dbs.keys().copied().collect();
    expected.sort_by_key(|(_, _, name)| {
        order
            .iter()
            .position(|&id| id == db_id_of(name))
            .unwrap_or(usize::MAX)
    });
    assert_eq!(attaches.len(), 6);
    for attach in &expected {
        assert!(
            attaches.contains(attach),
            "{attach:?} missing in {attaches:?}"
        );
    }
    assert_eq!(the_copy(&cluster, "v.tdb").len(), 1);
}

#[test]
fn incompatible_flags_fail_before_recovery_mode_changes() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.node(0).db("x.tdb", 0);
    cluster.node(1).db("x.tdb", db_flags::PERSISTENT);
    assert_eq!(run(&mut cluster), Err(RecoveryError::Failed(libc::EINVAL)));
    assert!(cluster.sent.iter().all(|s| s.opcode != Op::SetRecmode));
}

#[test]
fn readonly_and_sticky_flags_do_not_count_as_incompatible() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster
        .node(0)
        .db("x.tdb", db_flags::READONLY | db_flags::STICKY);
    cluster.node(1).db("x.tdb", 0);
    run(&mut cluster).unwrap();
}

#[test]
fn inactive_nodes_are_left_out_and_the_vnnmap_has_lmasters_only() {
    let mut cluster = FakeCluster::new(4, 1);
    cluster.local_view[3] = node_flags::DISCONNECTED;
    cluster.node(2).own_flags = node_flags::BANNED;
    cluster.node(0).caps = capabilities::RECMASTER;
    for pnn in 0..4 {
        cluster.node(pnn).db("v.tdb", 0);
    }
    run(&mut cluster).unwrap();
    let freeze_targets: Vec<u32> = cluster
        .sent
        .iter()
        .filter(|s| s.opcode == Op::DbFreeze)
        .map(|s| s.pnn)
        .collect();
    assert_eq!(freeze_targets, vec![0, 1]);
    let expected = VnnMap {
        generation: GENERATION,
        map: vec![1],
    };
    assert_eq!(cluster.nodes[0].vnnmap, expected);
    assert_eq!(cluster.nodes[1].vnnmap, expected);
    assert_eq!(cluster.nodes[2].vnnmap.generation, 1);
}

#[test]
fn without_lmasters_the_vnnmap_is_the_leader() {
    let mut cluster = FakeCluster::new(2, 1);
    for pnn in 0..2 {
        cluster.node(pnn).caps = capabilities::RECMASTER;
    }
    run(&mut cluster).unwrap();
    assert_eq!(cluster.nodes[0].vnnmap.map, vec![1]);
}

#[test]
fn a_database_that_keeps_failing_gets_its_culprit_banned() {
    let mut cluster = FakeCluster::new(3, 0);
    for pnn in 0..3 {
        cluster.node(pnn).db("v.tdb", 0);
    }
    cluster.node(2).fail.insert(Op::DbFreeze, -1);
    assert_eq!(run(&mut cluster), Err(RecoveryError::Failed(libc::EIO)));
    let freezes = cluster
        .sent
        .iter()
        .filter(|s| s.opcode == Op::DbFreeze && s.pnn == 2)
        .count();
    assert_eq!(freezes, 3);
    assert_eq!(cluster.nodes[2].ban, Some(300));
    let ban = cluster
        .sent
        .iter()
        .find(|s| s.opcode == Op::SetBanState)
        .unwrap();
    assert_eq!(
        (ban.pnn, &ban.data),
        (
            2,
            &ControlRequestData::BanState(BanState { pnn: 2, time: 300 })
        )
    );
    // The recovery stops: recovery mode stays ACTIVE, no END_RECOVERY.
    assert!(cluster
        .nodes
        .iter()
        .all(|n| n.recmode == RecoveryMode::Active));
    assert!(cluster.nodes.iter().all(|n| n.recoveries_ended == 0));
}

#[test]
fn no_ban_when_bans_are_disabled() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.tunables.enable_bans = 0;
    cluster.node(0).db("v.tdb", 0);
    cluster.node(1).fail.insert(Op::DbFreeze, -1);
    assert_eq!(run(&mut cluster), Err(RecoveryError::Failed(libc::EIO)));
    assert!(cluster.sent.iter().all(|s| s.opcode != Op::SetBanState));
}

#[test]
fn a_pull_that_keeps_failing_blames_the_node_pulled_from() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.node(0).db("v.tdb", 0);
    cluster.node(1).pull_count_error = 1;
    assert_eq!(run(&mut cluster), Err(RecoveryError::Failed(libc::EIO)));
    assert_eq!(cluster.nodes[1].ban, Some(300));
    assert_eq!(cluster.nodes[0].ban, None);
    // Every registered srvid was deregistered again.
    assert!(cluster.registered.is_empty());
}

#[test]
fn no_ban_for_a_culprit_that_went_inactive() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.node(0).db("v.tdb", 0);
    cluster.node(1).pull_count_error = 1;
    let mut wrapped = InactiveAtBanTime { inner: cluster };
    assert_eq!(
        recover(&mut wrapped, &stock_params()),
        Err(RecoveryError::Failed(libc::EIO))
    );
    let cluster = wrapped.inner;
    assert_eq!(cluster.nodes[1].ban, None);
    assert!(cluster.sent.iter().all(|s| s.opcode != Op::SetBanState));
    // The ban check asked node 1 itself.
    let last = cluster.sent.last().unwrap();
    assert_eq!((last.opcode, last.pnn), (Op::GetNodemap, 1));
}

/// Marks node 1 BANNED in its own node map once its pulls have failed three times.
struct InactiveAtBanTime {
    inner: FakeCluster,
}

impl super::transport::Transport for InactiveAtBanTime {
    fn pnn(&self) -> u32 {
        self.inner.pnn()
    }
    fn set_timeout(&mut self, timeout: std::time::Duration) {
        self.inner.set_timeout(timeout)
    }
    fn control_multi(
        &mut self,
        pnns: &[u32],
        request: &super::transport::Request,
    ) -> Result<super::transport::MultiOutcome, super::transport::Disconnected> {
        self.inner.control_multi(pnns, request)
    }
    fn control_collecting(
        &mut self,
        pnn: u32,
        request: &super::transport::Request,
        srvid: u64,
        sink: &mut dyn FnMut(super::transport::Payload),
    ) -> Result<super::transport::Outcome, super::transport::Disconnected> {
        let outcome = self.inner.control_collecting(pnn, request, srvid, sink);
        let pulls = self
            .inner
            .sent
            .iter()
            .filter(|s| s.opcode == Op::DbPull && s.pnn == 1)
            .count();
        if pulls == 3 {
            self.inner.node(1).own_flags = node_flags::BANNED;
        }
        outcome
    }
    fn message_multi(
        &mut self,
        pnns: &[u32],
        srvid: u64,
        data: &[u8],
    ) -> Result<(), super::transport::Disconnected> {
        self.inner.message_multi(pnns, srvid, data)
    }
}

#[test]
fn a_second_attempt_can_succeed() {
    let mut cluster = FakeCluster::new(2, 0);
    for pnn in 0..2 {
        cluster
            .node(pnn)
            .db("v.tdb", 0)
            .put(b"k", header(u64::from(pnn), pnn), b"v");
    }
    cluster.node(1).fail_times.insert(Op::WipeDatabase, 2);
    run(&mut cluster).unwrap();
    let wipes = cluster
        .sent
        .iter()
        .filter(|s| s.opcode == Op::WipeDatabase)
        .count();
    assert_eq!(wipes, 6);
    assert_eq!(the_copy(&cluster, "v.tdb").len(), 1);
    assert!(cluster.nodes.iter().all(|n| n.ban.is_none()));
}

#[test]
fn a_timeout_fails_the_attempt() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.node(0).db("v.tdb", 0);
    cluster.node(1).silent.insert(Op::DbTransactionCommit);
    assert_eq!(run(&mut cluster), Err(RecoveryError::Failed(libc::EIO)));
    // No ban credits for commit failures.
    assert!(cluster.nodes.iter().all(|n| n.ban.is_none()));
}

#[test]
fn the_timeout_comes_from_recover_timeout() {
    let mut cluster = FakeCluster::new(1, 0);
    cluster.tunables.recover_timeout = 7;
    run(&mut cluster).unwrap();
    assert_eq!(cluster.timeout, Some(std::time::Duration::from_secs(7)));
}

#[test]
fn push_buffers_follow_the_size_limit_and_end_with_a_possibly_empty_one() {
    let mut cluster = FakeCluster::new(2, 0);
    // Each record is 16 + 4 + 24 + 10 = 54 bytes; a buffer closes once it exceeds 120 bytes,
    // i.e. after three records (8 + 162), so six records make two full buffers and an empty
    // third one.
    cluster.tunables.rec_buffer_size_limit = 120;
    let db = cluster.node(0).db("v.tdb", 0);
    for k in 0..6 {
        db.put(format!("key{k}").as_bytes(), header(1, 0), b"0123456789");
    }
    cluster.node(1).db("v.tdb", 0);
    run(&mut cluster).unwrap();
    let to_node0: Vec<u32> = cluster
        .messages
        .iter()
        .filter(|(pnn, _, _)| *pnn == 0)
        .map(|(_, _, count)| *count)
        .collect();
    assert_eq!(to_node0, vec![3, 3, 0]);
    assert_eq!(the_copy(&cluster, "v.tdb").len(), 6);
}

#[test]
fn no_databases_is_a_successful_recovery() {
    let mut cluster = FakeCluster::new(3, 2);
    run(&mut cluster).unwrap();
    assert!(cluster.nodes.iter().all(|n| n.recoveries_ended == 1));
}

#[test]
fn a_name_mismatch_fails_the_database_and_blames_by_list_position() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.node(0).db("a.tdb", 0);
    let id = db_id_of("a.tdb");
    let mut other = cluster.nodes[0].dbs[&id].clone();
    other.name = "b.tdb".into();
    cluster.node(1).dbs.insert(id, other);
    assert_eq!(run(&mut cluster), Err(RecoveryError::Failed(libc::EIO)));
    assert_eq!(cluster.nodes[1].ban, Some(300));
}

#[test]
fn a_recovery_without_active_nodes_fails_like_stock() {
    let mut cluster = FakeCluster::new(2, 0);
    cluster.node(0).own_flags = node_flags::STOPPED;
    cluster.local_view[1] = node_flags::DISCONNECTED;
    assert_eq!(run(&mut cluster), Err(RecoveryError::Failed(libc::ENOMEM)));
    let last = cluster.sent.last().unwrap();
    assert_eq!(last.opcode, Op::GetNodemap);
}

#[test]
fn our_pulls_go_to_every_node_at_once() {
    let mut cluster = FakeCluster::new(3, 1);
    for pnn in 0..3 {
        cluster
            .node(pnn)
            .db("v.tdb", 0)
            .put(format!("k{pnn}").as_bytes(), header(1, pnn), b"v");
    }
    run_ours(&mut cluster).unwrap();
    // All three registrations, then all three pulls, then all three deregistrations.
    let pull_part: Vec<(Op, u32)> = cluster
        .sent
        .iter()
        .filter(|s| {
            matches!(
                s.opcode,
                Op::RegisterSrvid | Op::DbPull | Op::DeregisterSrvid
            )
        })
        .map(|s| (s.opcode, s.pnn))
        .collect();
    assert_eq!(
        pull_part,
        vec![
            (Op::RegisterSrvid, 1),
            (Op::RegisterSrvid, 1),
            (Op::RegisterSrvid, 1),
            (Op::DbPull, 0),
            (Op::DbPull, 1),
            (Op::DbPull, 2),
            (Op::DeregisterSrvid, 1),
            (Op::DeregisterSrvid, 1),
            (Op::DeregisterSrvid, 1),
        ]
    );
    let srvids: Vec<u64> = cluster
        .sent
        .iter()
        .filter_map(|s| match &s.data {
            ControlRequestData::PulldbExt(ext) => Some(ext.srvid),
            _ => None,
        })
        .collect();
    // Three pulls to distinct srvids, then the push (START to each node).
    let push = srvid::RECOVERY + 4;
    assert_eq!(
        srvids,
        vec![
            srvid::RECOVERY + 1,
            srvid::RECOVERY + 2,
            srvid::RECOVERY + 3,
            push,
            push,
            push
        ]
    );
    assert!(cluster.registered.is_empty());
    // Each node got START, its share (possibly an empty buffer) and CONFIRM.
    let total: u32 = cluster
        .messages
        .iter()
        .filter(|(_, srvid, _)| *srvid == push)
        .map(|(_, _, count)| count)
        .sum();
    assert_eq!(total, 3);
    for pnn in 0..3 {
        assert!(cluster.messages.iter().any(|(to, _, _)| *to == pnn));
    }
}

#[test]
fn our_concurrent_pull_blames_the_first_failing_node_in_list_order() {
    let mut cluster = FakeCluster::new(3, 0);
    cluster.node(0).db("v.tdb", 0);
    cluster.node(1).pull_count_error = 1;
    cluster.node(2).pull_count_error = 1;
    assert_eq!(
        run_ours(&mut cluster),
        Err(RecoveryError::Failed(libc::EIO))
    );
    assert_eq!(cluster.nodes[1].ban, Some(300));
    assert_eq!(cluster.nodes[2].ban, None);
    assert!(cluster.registered.is_empty());
}

#[test]
fn our_persistent_and_replicated_recoveries_are_stocks() {
    let build = || {
        let mut cluster = FakeCluster::new(3, 1);
        for (pnn, seqnum) in [(0, 5u64), (1, 3), (2, 7)] {
            for (name, flags) in [
                ("p.tdb", db_flags::PERSISTENT),
                ("r.tdb", db_flags::REPLICATED),
            ] {
                let db = cluster.node(pnn).db(name, flags);
                db.put(SEQNUM_KEY, header(1, pnn), &seqnum_value(seqnum));
                db.put(format!("k{pnn}").as_bytes(), header(2, pnn), b"v");
            }
        }
        cluster
    };
    let mut stock = build();
    let mut ours = build();
    run(&mut stock).unwrap();
    run_ours(&mut ours).unwrap();
    for name in ["p.tdb", "r.tdb"] {
        assert_eq!(the_copy(&ours, name), the_copy(&stock, name), "{name}");
    }
}

#[test]
fn the_stock_switch() {
    use super::recovery::{ENV_CONCURRENT_PULLS, ENV_STOCK};
    let from = |vars: &[(&'static str, &'static str)]| {
        let vars = vars.to_vec();
        Extensions::from_env(move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
    };
    assert_eq!(from(&[]), Extensions::default());
    assert_eq!(from(&[(ENV_STOCK, "no")]), Extensions::default());
    for on in ["1", "yes", "TRUE"] {
        assert_eq!(from(&[(ENV_STOCK, on)]), Extensions::STOCK);
        assert_eq!(
            from(&[(ENV_STOCK, on), (ENV_CONCURRENT_PULLS, "1")]),
            Extensions::STOCK
        );
    }
    assert!(Extensions::default().partitioned_push && Extensions::default().concurrent_pulls);
    assert!(from(&[(ENV_CONCURRENT_PULLS, "yes")]).concurrent_pulls);
    for off in ["0", "no", "False"] {
        let one_by_one = from(&[(ENV_CONCURRENT_PULLS, off)]);
        assert!(!one_by_one.concurrent_pulls && one_by_one.partitioned_push);
    }
}
