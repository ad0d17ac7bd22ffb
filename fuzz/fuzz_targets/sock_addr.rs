#![no_main]
//! Any input either parses to an address that re-encodes to the same 28 bytes, or is rejected.

use ctdb::protocol::{Marshal, SockAddr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((addr, used)) = SockAddr::pull(data) {
        assert_eq!(used, 28);
        let again = SockAddr::from_bytes_exact(&addr.to_bytes()).expect("own encoding parses");
        assert_eq!(again, addr);
    }
});
