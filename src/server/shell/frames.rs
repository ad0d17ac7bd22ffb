//! The header checks the shell applies before a frame reaches the core
//! (`server/ctdb_daemon.c:ctdb_daemon_read_cb` for clients, `tcp/tcp_io.c:ctdb_tcp_read_cb`
//! for nodes). Framing itself is [`crate::protocol::packet::FrameReader`].

use crate::protocol::header::ReqHeader;
use crate::protocol::{Marshal, PullError};

pub use crate::protocol::packet::{FrameError, FrameReader};

/// Magic and version, as a client frame must have them; stock drops the packet otherwise.
pub fn check_client_header(frame: &[u8]) -> Result<(), PullError> {
    ReqHeader::pull(frame)?.0.verify()
}

/// Additionally a length that is a multiple of 8: node frames that fail mark the node dead.
pub fn check_node_header(frame: &[u8]) -> Result<(), PullError> {
    ReqHeader::pull(frame)?.0.verify_node()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::{CTDB_MAGIC, CTDB_PROTOCOL};

    fn header(len: u32, magic: u32, version: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for word in [len, magic, version] {
            v.extend_from_slice(&word.to_ne_bytes());
        }
        v.resize(len as usize, 0);
        v
    }

    #[test]
    fn clients_may_send_unpadded_frames_nodes_may_not() {
        assert!(check_client_header(&header(60, CTDB_MAGIC, CTDB_PROTOCOL)).is_ok());
        assert!(check_node_header(&header(60, CTDB_MAGIC, CTDB_PROTOCOL)).is_err());
        assert!(check_node_header(&header(64, CTDB_MAGIC, CTDB_PROTOCOL)).is_ok());
        assert_eq!(
            check_client_header(&header(32, 7, CTDB_PROTOCOL)),
            Err(PullError::BadMagic(7))
        );
        assert_eq!(
            check_client_header(&header(32, CTDB_MAGIC, 2)),
            Err(PullError::BadVersion(2))
        );
    }
}
