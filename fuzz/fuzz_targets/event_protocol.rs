#![no_main]
//! ctdb-eventd requests and replies.

use libfuzzer_sys::fuzz_target;
use ctdb::protocol::event::{EventPacket, EventReply, EventRequest};
use ctdb::protocol::Marshal;

fuzz_target!(|data: &[u8]| {
    if let Ok((p, _)) = EventPacket::<EventRequest>::pull(data) {
        let again = EventPacket::<EventRequest>::pull(&p.to_bytes()).expect("own encoding parses");
        assert_eq!(again.0, p);
    }
    let _ = EventPacket::<EventReply>::pull(data);
});
