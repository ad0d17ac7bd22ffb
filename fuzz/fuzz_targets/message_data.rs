#![no_main]
//! Message payloads keyed by srvid.

use libfuzzer_sys::fuzz_target;
use ctdb::protocol::srvid::MessageData;

const SRVIDS: [u64; 8] = [
    0xF001_0000_0000_0000,
    0xF002_0000_0000_0000,
    0xF100_0000_0000_0000,
    0xF101_0000_0000_0000,
    0xF400_0000_0000_0000,
    0xFB00_0000_0000_0000,
    0xFB03_0000_0000_0000,
    0x0000_0000_0000_1234,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let _ = MessageData::pull(SRVIDS[usize::from(pick) % SRVIDS.len()], rest);
});
