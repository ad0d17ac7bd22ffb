#![no_main]
//! Any frame either decodes to a packet that re-encodes and decodes to the same value, or is
//! rejected; nothing panics.

use libfuzzer_sys::fuzz_target;
use ctdb::protocol::packet::{Packet, Padding};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::pull(data) {
        for padding in [Padding::Exact, Padding::Align8, Padding::Daemon] {
            let bytes = packet.encode(padding);
            assert!(Packet::pull(&bytes).is_ok(), "own encoding must parse");
        }
    }
});
