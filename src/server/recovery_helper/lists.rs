//! The helper's bookkeeping of nodes and databases (the `node_list` and `db_list` parts of
//! `ctdb/server/ctdb_recovery_helper.c`).

use crate::protocol::types::{capabilities, db_flags};

/// The nodes taking part in a recovery, in node-map order, with what the helper learns about
/// them along the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList {
    /// The most nodes the list may hold (the size of the node map it came from).
    capacity: usize,
    entries: Vec<NodeEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeEntry {
    pnn: u32,
    caps: u32,
    ban_credits: u32,
}

impl NodeList {
    pub fn new(capacity: usize) -> Self {
        NodeList {
            capacity,
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Appends `pnn`; refuses a duplicate or a node beyond the capacity, which stock treats
    /// as an inconsistent node map (`EINVAL`).
    pub fn add(&mut self, pnn: u32) -> bool {
        if self.entries.len() == self.capacity || self.entries.iter().any(|e| e.pnn == pnn) {
            return false;
        }
        self.entries.push(NodeEntry {
            pnn,
            caps: 0,
            ban_credits: 0,
        });
        true
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn pnns(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.pnn).collect()
    }

    pub fn pnn_at(&self, index: usize) -> Option<u32> {
        self.entries.get(index).map(|e| e.pnn)
    }

    pub fn set_caps(&mut self, index: usize, caps: u32) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.caps = caps;
        }
    }

    /// The nodes that may be lmaster, in list order: the new vnn map.
    pub fn lmasters(&self) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|e| e.caps & capabilities::LMASTER != 0)
            .map(|e| e.pnn)
            .collect()
    }

    /// One more ban credit for `pnn` (ignored for nodes not in the list).
    pub fn add_ban_credit(&mut self, pnn: u32) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.pnn == pnn) {
            entry.ban_credits += 1;
        }
    }

    pub fn ban_credits(&self, pnn: u32) -> u32 {
        self.entries
            .iter()
            .find(|e| e.pnn == pnn)
            .map_or(0, |e| e.ban_credits)
    }

    pub fn reset_ban_credits(&mut self, pnn: u32) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.pnn == pnn) {
            entry.ban_credits = 0;
        }
    }

    /// The node with the most ban credits (the first one on a tie) and its credits; `None`
    /// when nobody has any.
    pub fn most_credits(&self) -> Option<(u32, u32)> {
        let mut best: Option<(u32, u32)> = None;
        for entry in &self.entries {
            if entry.ban_credits > best.map_or(0, |(_, credits)| credits) {
                best = Some((entry.pnn, entry.ban_credits));
            }
        }
        best
    }
}

/// One database of the union of every node's db map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEntry {
    pub db_id: u32,
    /// `CTDB_DB_FLAGS_*` without READONLY and STICKY.
    pub flags: u32,
    /// The nodes that have it attached, in the order their db maps were read.
    pub pnns: Vec<u32>,
}

impl DbEntry {
    pub fn is_persistent(&self) -> bool {
        self.flags & u32::from(db_flags::PERSISTENT) != 0
    }

    pub fn is_replicated(&self) -> bool {
        self.flags & u32::from(db_flags::REPLICATED) != 0
    }
}

/// Why a db map entry could not be merged into the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbListError {
    /// The same database has different flags on two nodes.
    IncompatibleFlags { db_id: u32, flags: u32, known: u32 },
    /// A database listed more often than there are nodes.
    TooManyNodes { db_id: u32 },
}

/// The union of the db maps, in first-seen order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbList {
    max_nodes: usize,
    dbs: Vec<DbEntry>,
}

impl DbList {
    pub fn new(max_nodes: usize) -> Self {
        DbList {
            max_nodes,
            dbs: Vec::new(),
        }
    }

    /// Records that node `pnn` has `db_id` with `flags`. READONLY and STICKY are ignored: a
    /// node only sets them once a client asks it to, and an attach cannot carry them.
    pub fn check_and_add(&mut self, db_id: u32, flags: u8, pnn: u32) -> Result<(), DbListError> {
        let flags = u32::from(flags & !(db_flags::READONLY | db_flags::STICKY));
        match self.dbs.iter_mut().find(|db| db.db_id == db_id) {
            None => {
                self.dbs.push(DbEntry {
                    db_id,
                    flags,
                    pnns: vec![pnn],
                });
                Ok(())
            }
            Some(db) if db.flags != flags => Err(DbListError::IncompatibleFlags {
                db_id,
                flags,
                known: db.flags,
            }),
            Some(db) if db.pnns.len() >= self.max_nodes => Err(DbListError::TooManyNodes { db_id }),
            Some(db) => {
                db.pnns.push(pnn);
                Ok(())
            }
        }
    }

    pub fn dbs(&self) -> &[DbEntry] {
        &self.dbs
    }

    pub fn len(&self) -> usize {
        self.dbs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dbs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_list_refuses_duplicates_and_overflow() {
        let mut list = NodeList::new(2);
        assert!(list.add(3));
        assert!(!list.add(3));
        assert!(list.add(1));
        assert!(!list.add(0));
        assert_eq!(list.pnns(), vec![3, 1]);
    }

    #[test]
    fn lmasters_follow_capabilities_in_list_order() {
        let mut list = NodeList::new(3);
        for pnn in [2, 0, 1] {
            list.add(pnn);
        }
        list.set_caps(0, capabilities::DEFAULT);
        list.set_caps(1, capabilities::RECMASTER);
        list.set_caps(2, capabilities::LMASTER);
        assert_eq!(list.lmasters(), vec![2, 1]);
    }

    #[test]
    fn most_credits_prefers_the_first_of_equals() {
        let mut list = NodeList::new(3);
        for pnn in 0..3 {
            list.add(pnn);
        }
        assert_eq!(list.most_credits(), None);
        list.add_ban_credit(2);
        list.add_ban_credit(1);
        assert_eq!(list.most_credits(), Some((1, 1)));
        list.add_ban_credit(2);
        assert_eq!(list.most_credits(), Some((2, 2)));
        list.add_ban_credit(7);
        list.reset_ban_credits(2);
        assert_eq!(list.most_credits(), Some((1, 1)));
    }

    #[test]
    fn db_list_masks_readonly_and_sticky_but_not_persistence() {
        let mut list = DbList::new(3);
        list.check_and_add(7, db_flags::READONLY, 0).unwrap();
        list.check_and_add(7, db_flags::STICKY, 1).unwrap();
        list.check_and_add(7, 0, 2).unwrap();
        assert_eq!(list.dbs()[0].pnns, vec![0, 1, 2]);
        assert_eq!(
            list.check_and_add(7, db_flags::PERSISTENT, 3),
            Err(DbListError::IncompatibleFlags {
                db_id: 7,
                flags: 1,
                known: 0
            })
        );
        assert_eq!(
            list.check_and_add(7, 0, 3),
            Err(DbListError::TooManyNodes { db_id: 7 })
        );
    }
}
