//! The daemon (mirrors `ctdb/server/`): a sans-IO core driven by a thin mio shell.

pub mod call;
pub mod cluster_mutex;
pub mod daemon;
pub mod database;
pub mod effect;
pub mod ipalloc;
pub mod recoverd;
pub mod recoverd_shell;
pub mod recovery_helper;
pub mod shell;
pub mod srvid;
pub mod takeover;
pub mod takeover_helper;
