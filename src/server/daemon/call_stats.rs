//! Node statistics of record calls (the `total_calls`, `pending_calls` and `call_latency`
//! bookkeeping of `daemon_request_call_from_client` in `ctdb/server/ctdb_daemon.c`) and client
//! notifications (`ctdb_control_register_notify`, `ctdb_control_deregister_notify` and
//! `ctdb_client_notify_destructor`), and the repack helper's life cycle.

use super::{ControlResult, Daemon, MAX_NOTIFY_PER_CLIENT};
use crate::common::clock::Instant;
use crate::protocol::packet::{Body, Packet};
use crate::protocol::types::NotifyData;
use crate::protocol::Marshal;
use crate::server::call::stats::CallCounters;
use crate::server::database::stats::add_latency;
use crate::server::effect::{ClientId, Pnn};

impl Daemon {
    /// Starts a repack helper when a database vacuumed and `RepackLimit` is set.
    pub(super) fn start_repack(&mut self) {
        if self.recovery_mode == super::RECOVERY_ACTIVE {
            return;
        }
        let limit = self.tunables.repack_limit();
        if let Some(request) = self.dbs.next_repack(limit) {
            self.effects
                .push_back(crate::server::effect::Effect::Repack(request));
        }
    }

    /// The repack helper of `db_id` exited with `code` (`None`: it did not start or died of a
    /// signal).
    pub fn on_repack_done(&mut self, _now: Instant, db_id: u32, code: Option<i32>) {
        self.dbs.repack_finished(db_id, code);
        self.start_repack();
    }

    /// A REPLY_CALL goes to a client: the call is no longer pending and its latency counts.
    pub(super) fn client_call_answered(&mut self, now: Instant, client: ClientId, packet: &Packet) {
        if !matches!(packet.body, Body::ReplyCall(_)) {
            return;
        }
        let Some(start) = self.call_starts.remove(&(client, packet.reqid)) else {
            return;
        };
        let seconds = now.saturating_since(start).as_secs_f64();
        self.bump(|s| {
            s.pending_calls = s.pending_calls.saturating_sub(1);
            add_latency(&mut s.call_latency, seconds);
        });
    }

    /// Adds what the call service counted since the last drain.
    pub(super) fn add_call_counters(&mut self, c: &CallCounters, locks_pending: u32) {
        self.bump(|s| {
            for (total, add) in s.hop_count_bucket.iter_mut().zip(&c.hop_count_bucket) {
                *total = total.saturating_add(*add);
            }
            s.max_hop_count = s.max_hop_count.max(c.max_hop_count);
            let locks = &mut s.locks;
            locks.num_pending = locks_pending;
            if c.locks.num_calls == 0 {
                return;
            }
            locks.num_calls = locks.num_calls.saturating_add(c.locks.num_calls);
            for (total, add) in locks.buckets.iter_mut().zip(&c.locks.buckets) {
                *total = total.saturating_add(*add);
            }
            let (l, add) = (&mut locks.latency, &c.locks.latency);
            if l.num == 0 || add.min < l.min {
                l.min = add.min;
            }
            l.max = l.max.max(add.max);
            l.total += add.total;
            l.num = l.num.saturating_add(add.num);
        });
    }

    /// REGISTER_NOTIFY: only a local client may register, once per srvid.
    pub(super) fn control_register_notify(
        &mut self,
        client_id: u32,
        srcnode: Pnn,
        data: &[u8],
    ) -> ControlResult {
        let Ok(notify) = NotifyData::from_bytes_exact(data) else {
            log::error!(
                "Wrong amount of data in REGISTER_NOTIFY: {} bytes",
                data.len()
            );
            return ControlResult::status(-1);
        };
        let Some(client) = self.local_client(client_id, srcnode) else {
            log::error!("REGISTER_NOTIFY needs a local client");
            return ControlResult::status(-1);
        };
        let Some(entry) = self.clients.get_mut(&client) else {
            return ControlResult::status(-1);
        };
        if entry.notify.iter().any(|(srvid, _)| *srvid == notify.srvid) {
            log::error!(
                "Notification for srvid:{} already exists for this client",
                notify.srvid
            );
            return ControlResult::status(-1);
        }
        if entry.notify.len() >= MAX_NOTIFY_PER_CLIENT {
            log::error!("Too many notifications for one client");
            return ControlResult::status(-1);
        }
        entry.notify.push((notify.srvid, notify.data));
        ControlResult::status(0)
    }

    /// DEREGISTER_NOTIFY: forgets a registration without sending it.
    pub(super) fn control_deregister_notify(
        &mut self,
        client_id: u32,
        srcnode: Pnn,
        data: &[u8],
    ) -> ControlResult {
        let Some(srvid) = <[u8; 8]>::try_from(data).ok().map(u64::from_ne_bytes) else {
            return ControlResult::status(-1);
        };
        let Some(client) = self.local_client(client_id, srcnode) else {
            log::error!("DEREGISTER_NOTIFY needs a local client");
            return ControlResult::status(-1);
        };
        let Some(entry) = self.clients.get_mut(&client) else {
            return ControlResult::status(-1);
        };
        let before = entry.notify.len();
        entry.notify.retain(|(s, _)| *s != srvid);
        if entry.notify.len() == before {
            log::error!("No notification for srvid:{srvid} found for this client");
            return ControlResult::status(-1);
        }
        ControlResult::status(0)
    }
}
