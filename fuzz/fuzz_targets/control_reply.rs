#![no_main]
//! Control reply data of every opcode: parse, and re-encode what parses.

use libfuzzer_sys::fuzz_target;
use ctdb::protocol::control::{pull_reply_data, push_reply_data};
use ctdb::protocol::opcode::ControlOpcode;

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else { return };
    let opcode = ControlOpcode::from(u32::from(op));
    if let Ok(value) = pull_reply_data(opcode, rest) {
        let mut out = Vec::new();
        push_reply_data(&value, &mut out);
        assert!(pull_reply_data(opcode, &out).is_ok(), "own encoding must parse");
    }
});
