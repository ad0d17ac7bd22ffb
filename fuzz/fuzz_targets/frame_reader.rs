#![no_main]
//! A byte stream cut at arbitrary points never makes the frame reader panic or loop.

use libfuzzer_sys::fuzz_target;
use ctdb::protocol::packet::FrameReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new(1 << 20);
    for chunk in data.chunks(7) {
        reader.feed(chunk);
        for _ in 0..64 {
            match reader.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
