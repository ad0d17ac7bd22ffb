//! Shared infrastructure (mirrors `ctdb/common/`): configuration files, paths, tunables, logging.

pub mod clock;
pub mod conf;
pub mod heap;
pub mod logging;
pub mod nodes;
pub mod path;
pub mod public_addresses;
pub mod spawn;
pub mod sys;
pub mod tdb;
pub mod tunable;
