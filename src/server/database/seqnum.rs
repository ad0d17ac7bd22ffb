//! Database sequence numbers across the cluster (ENABLE_SEQNUM, UPDATE_SEQNUM and the
//! periodic check of `ctdb_ltdb_seqnum_check` in `server/ctdb_ltdb_server.c`).
//!
//! smbd opens some volatile databases (brlock, locking) with `TDB_SEQNUM` and watches the
//! local file's sequence number to notice changes. A change made on another node must move
//! that number here too: each node that enabled seqnum handling for a database polls its own
//! file every `SeqnumInterval` ms and, when the number moved, tells the active nodes with a
//! NOREPLY UPDATE_SEQNUM; they bump their copy's number without waiting for its lock.

use super::{DatabaseSet, DbEffect, DbReply};
use crate::common::clock::Instant;
use crate::protocol::opcode::ControlOpcode;
use crate::server::effect::Pnn;
use std::time::Duration;

/// The polling state of a database whose sequence number is propagated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SeqnumWatch {
    /// The number seen at the last check (or the last bump from another node).
    last_seen: u32,
    next_check: Instant,
}

fn interval(seqnum_interval_ms: u32) -> Duration {
    // Stock re-arms its timer with the tunable as is; 0 would spin, so poll at least every
    // millisecond.
    Duration::from_millis(u64::from(seqnum_interval_ms.max(1)))
}

impl DatabaseSet {
    /// ENABLE_SEQNUM: start propagating the database's sequence number.
    pub(super) fn control_enable_seqnum(
        &mut self,
        now: Instant,
        db_id: u32,
        seqnum_interval_ms: u32,
    ) -> DbReply {
        let Some(db) = self.get_mut(db_id) else {
            log::error!("Unknown db_id 0x{db_id:x} in ctdb_ltdb_enable_seqnum");
            return DbReply::status(-1);
        };
        db.store.enable_seqnum();
        let last_seen = db.store.seqnum();
        let next_check = match db.seqnum_watch {
            Some(watch) => watch.next_check,
            None => now.saturating_add(interval(seqnum_interval_ms)),
        };
        db.seqnum_watch = Some(SeqnumWatch {
            last_seen,
            next_check,
        });
        DbReply::status(0)
    }

    /// UPDATE_SEQNUM from `srcnode`: another node's copy changed.
    pub(super) fn control_update_seqnum(&mut self, db_id: u32, srcnode: Pnn) -> DbReply {
        if srcnode == self.config.pnn {
            return DbReply::status(0);
        }
        let Some(db) = self.get_mut(db_id) else {
            log::error!("Unknown db_id 0x{db_id:x} in ctdb_ltdb_update_seqnum");
            return DbReply::status(-1);
        };
        if let Some(reason) = &db.unhealthy_reason {
            log::error!(
                "db({}) unhealty in ctdb_ltdb_update_seqnum: {reason}",
                db.name
            );
            return DbReply::status(-1);
        }
        db.store.increment_seqnum_nonblock();
        let seen = db.store.seqnum();
        if let Some(watch) = db.seqnum_watch.as_mut() {
            watch.last_seen = seen;
        }
        DbReply::status(0)
    }

    /// The next seqnum check, if any database has one.
    pub(super) fn seqnum_timeout(&self) -> Option<Instant> {
        self.dbs
            .iter()
            .filter_map(|db| db.seqnum_watch.map(|w| w.next_check))
            .min()
    }

    /// Checks the databases whose check is due; a moved number is broadcast to the active
    /// nodes.
    pub(super) fn check_seqnums(&mut self, now: Instant, seqnum_interval_ms: u32) {
        let mut changed = Vec::new();
        for db in &mut self.dbs {
            let Some(watch) = db.seqnum_watch.as_mut() else {
                continue;
            };
            if now < watch.next_check {
                continue;
            }
            let seqnum = db.store.seqnum();
            if seqnum != watch.last_seen {
                changed.push(db.db_id);
            }
            watch.last_seen = seqnum;
            watch.next_check = now.saturating_add(interval(seqnum_interval_ms));
        }
        for db_id in changed {
            self.effects.push_back(DbEffect::BroadcastActiveControl {
                opcode: ControlOpcode::UpdateSeqnum,
                data: db_id.to_ne_bytes().to_vec(),
            });
        }
    }
}
