//! Message port registrations of local clients (mirrors `ctdb/common/srvid.c`).
//!
//! A message goes to every registration of its exact srvid and to every registration of
//! `CTDB_SRVID_ALL`; a client that registered the same srvid twice gets one copy per
//! registration, as in stock.

use super::effect::ClientId;
use std::collections::BTreeMap;

pub const SRVID_ALL: u64 = u64::MAX;

#[derive(Debug, Default)]
pub struct SrvidRegistry {
    by_srvid: BTreeMap<u64, Vec<ClientId>>,
}

impl SrvidRegistry {
    pub fn register(&mut self, srvid: u64, client: ClientId) {
        self.by_srvid.entry(srvid).or_default().push(client);
    }

    /// Removes one registration; false when the client had none for `srvid` (stock then
    /// answers DEREGISTER_SRVID with ENOENT).
    pub fn deregister(&mut self, srvid: u64, client: ClientId) -> bool {
        let Some(list) = self.by_srvid.get_mut(&srvid) else {
            return false;
        };
        let Some(pos) = list.iter().position(|&c| c == client) else {
            return false;
        };
        list.remove(pos);
        if list.is_empty() {
            self.by_srvid.remove(&srvid);
        }
        true
    }

    /// Drops every registration of a client that went away.
    pub fn remove_client(&mut self, client: ClientId) {
        self.by_srvid.retain(|_, list| {
            list.retain(|&c| c != client);
            !list.is_empty()
        });
    }

    pub fn is_registered(&self, srvid: u64, client: ClientId) -> bool {
        self.by_srvid
            .get(&srvid)
            .is_some_and(|l| l.contains(&client))
    }

    pub fn has_any(&self, srvid: u64) -> bool {
        self.by_srvid.contains_key(&srvid)
    }

    /// The clients that receive one copy each of a message to `srvid`.
    pub fn targets(&self, srvid: u64) -> Vec<ClientId> {
        let mut out: Vec<ClientId> = self.by_srvid.get(&srvid).cloned().unwrap_or_default();
        if srvid != SRVID_ALL {
            if let Some(all) = self.by_srvid.get(&SRVID_ALL) {
                out.extend(all);
            }
        }
        out
    }

    /// The clients registered for exactly `srvid` (no `CTDB_SRVID_ALL` fan-out), one entry
    /// per registration.
    pub fn exact_targets(&self, srvid: u64) -> Vec<ClientId> {
        self.by_srvid.get(&srvid).cloned().unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.by_srvid.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_all_registrations_receive_copies() {
        let mut r = SrvidRegistry::default();
        r.register(7, 1);
        r.register(7, 2);
        r.register(SRVID_ALL, 3);
        r.register(8, 1);
        assert_eq!(r.targets(7), vec![1, 2, 3]);
        assert_eq!(r.targets(9), vec![3]);
        assert_eq!(r.targets(SRVID_ALL), vec![3]);
        assert!(r.deregister(7, 2));
        assert!(!r.deregister(7, 2));
        r.remove_client(1);
        assert_eq!(r.targets(7), vec![3]);
        assert!(!r.has_any(8));
        assert_eq!(r.count(), 1);
    }
}
