#![no_main]
//! The configuration parsers: ctdb.conf, nodes, public_addresses, ctdb.tunables.

use libfuzzer_sys::fuzz_target;
use ctdb::common::{conf::CtdbConf, nodes, public_addresses, tunable};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = CtdbConf::parse(&text, "ctdb.conf");
    let _ = nodes::parse(&text, "nodes");
    let _ = public_addresses::parse(&text, "public_addresses");
    let _ = tunable::parse_file(&text, "ctdb.tunables");
});
