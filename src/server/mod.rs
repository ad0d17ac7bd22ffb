//! The daemon (mirrors `ctdb/server/`): a sans-IO core driven by a thin mio shell.

pub mod cluster_mutex;
pub mod daemon;
pub mod effect;
pub mod ipalloc;
pub mod srvid;
