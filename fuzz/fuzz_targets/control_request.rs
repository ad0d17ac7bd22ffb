#![no_main]
//! Control request data of every opcode: parse, and re-encode what parses.

use libfuzzer_sys::fuzz_target;
use ctdb::protocol::control::{pull_request_data, push_request_data};
use ctdb::protocol::opcode::ControlOpcode;

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else { return };
    let opcode = ControlOpcode::from(u32::from(op));
    if let Ok(value) = pull_request_data(opcode, rest) {
        let mut out = Vec::new();
        push_request_data(&value, &mut out);
        assert!(pull_request_data(opcode, &out).is_ok(), "own encoding must parse");
    }
});
