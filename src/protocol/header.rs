//! The 32-byte header in front of every CTDB packet (mirrors `ctdb/protocol/protocol_header.c`
//! and the constants of `ctdb/protocol/protocol.h`).
//!
//! Two receive paths check it differently in stock CTDB, so there are two verifiers:
//! [`ReqHeader::verify`] is what the unix-socket side and the client library check, and
//! [`ReqHeader::verify_node`] adds the length rules `tcp/tcp_io.c:ctdb_tcp_read_cb` enforces on
//! node-to-node traffic, where any violation marks the peer dead.

use super::basic::{Marshal, PullError, Reader, Writer};

/// `"CTDB"` read as a little-endian u32.
pub const CTDB_MAGIC: u32 = 0x4354_4442;
/// The only protocol version there has ever been.
pub const CTDB_PROTOCOL: u32 = 1;
/// `sizeof(struct ctdb_req_header)`.
pub const HEADER_LEN: usize = 32;
/// Every packet a stock daemon or the new client library writes is padded to this.
pub const PACKET_ALIGNMENT: usize = 8;

/// Client to its local daemon: "whichever node you are".
pub const CURRENT_NODE: u32 = 0xF000_0001;
/// All non-deleted nodes, connected or not (disconnected ones drop it silently).
pub const BROADCAST_ALL: u32 = 0xF000_0002;
/// All nodes in the current vnn map (not inactive).
pub const BROADCAST_ACTIVE: u32 = 0xF000_0003;
/// All connected, non-deleted nodes.
pub const BROADCAST_CONNECTED: u32 = 0xF000_0004;
/// Defined by the protocol, never used by the 4.17 daemon.
pub const MULTICAST: u32 = 0xF000_0005;
/// "No such node" / "not known yet".
pub const UNKNOWN_PNN: u32 = 0xFFFF_FFFF;

/// The generation of a database or vnn map that is being recovered.
pub const INVALID_GENERATION: u32 = 1;

const _: () = assert!(HEADER_LEN == 8 * 4);
const _: () = assert!(HEADER_LEN.is_multiple_of(PACKET_ALIGNMENT));

/// True for the special destination PNNs that mean "several nodes".
pub fn is_broadcast(destnode: u32) -> bool {
    matches!(
        destnode,
        BROADCAST_ALL | BROADCAST_ACTIVE | BROADCAST_CONNECTED | MULTICAST
    )
}

crate::enum_with_unknown! {
    /// Packet operation (`enum ctdb_operation`). Value 6 was removed long ago and stays unknown.
    pub enum Operation {
        ReqCall = 0 => "REQ_CALL",
        ReplyCall = 1 => "REPLY_CALL",
        ReqDmaster = 2 => "REQ_DMASTER",
        ReplyDmaster = 3 => "REPLY_DMASTER",
        ReplyError = 4 => "REPLY_ERROR",
        ReqMessage = 5 => "REQ_MESSAGE",
        ReqControl = 7 => "REQ_CONTROL",
        ReplyControl = 8 => "REPLY_CONTROL",
        ReqKeepalive = 9 => "REQ_KEEPALIVE",
        ReqTunnel = 10 => "REQ_TUNNEL",
    }
}

/// `struct ctdb_req_header`, field for field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReqHeader {
    /// Whole packet, header and trailing padding included.
    pub length: u32,
    pub magic: u32,
    pub version: u32,
    pub generation: u32,
    pub operation: Operation,
    pub destnode: u32,
    pub srcnode: u32,
    pub reqid: u32,
}

impl ReqHeader {
    /// A header as `ctdb_req_header_fill` makes it: right magic and version, length of a bare
    /// header (the encoder overwrites it).
    pub fn new(
        generation: u32,
        operation: Operation,
        destnode: u32,
        srcnode: u32,
        reqid: u32,
    ) -> Self {
        ReqHeader {
            length: HEADER_LEN as u32,
            magic: CTDB_MAGIC,
            version: CTDB_PROTOCOL,
            generation,
            operation,
            destnode,
            srcnode,
            reqid,
        }
    }

    /// The checks of `ctdb_req_header_verify` (with no expected operation): a length that at
    /// least covers the header, the magic and the version.
    pub fn verify(&self) -> Result<(), PullError> {
        if (self.length as usize) < HEADER_LEN {
            return Err(PullError::BadLength {
                what: "packet length",
                value: self.length as usize,
            });
        }
        if self.magic != CTDB_MAGIC {
            return Err(PullError::BadMagic(self.magic));
        }
        if self.version != CTDB_PROTOCOL {
            return Err(PullError::BadVersion(self.version));
        }
        Ok(())
    }

    /// The stricter checks a node applies to packets from other nodes: additionally the length
    /// must be a multiple of 8. Stock treats a failure as a dead node, not a bad packet.
    pub fn verify_node(&self) -> Result<(), PullError> {
        self.verify()?;
        if !(self.length as usize).is_multiple_of(PACKET_ALIGNMENT) {
            return Err(PullError::BadLength {
                what: "unaligned node packet length",
                value: self.length as usize,
            });
        }
        Ok(())
    }
}

impl Marshal for ReqHeader {
    fn wire_len(&self) -> usize {
        HEADER_LEN
    }

    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.length);
        out.put_u32(self.magic);
        out.put_u32(self.version);
        out.put_u32(self.generation);
        out.put_u32(self.operation.into());
        out.put_u32(self.destnode);
        out.put_u32(self.srcnode);
        out.put_u32(self.reqid);
    }

    /// Reads the eight words without judging them, like `ctdb_req_header_pull`; call
    /// [`ReqHeader::verify`] for the checks.
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let header = ReqHeader {
            length: r.u32()?,
            magic: r.u32()?,
            version: r.u32()?,
            generation: r.u32()?,
            operation: Operation::from(r.u32()?),
            destnode: r.u32()?,
            srcnode: r.u32()?,
            reqid: r.u32()?,
        };
        Ok((header, r.pos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{seeds, Prng};

    fn random_header(prng: &mut Prng) -> ReqHeader {
        ReqHeader {
            length: prng.u32(),
            magic: prng.u32(),
            version: prng.u32(),
            generation: prng.u32(),
            operation: Operation::from(prng.u32() % 16),
            destnode: prng.u32(),
            srcnode: prng.u32(),
            reqid: prng.u32(),
        }
    }

    #[test]
    fn header_round_trip() {
        for seed in seeds(1000) {
            let mut prng = Prng::new(seed);
            let header = random_header(&mut prng);
            let bytes = header.to_bytes();
            assert_eq!(bytes.len(), header.wire_len(), "seed {seed}");
            let (back, used) = ReqHeader::pull(&bytes).unwrap();
            assert_eq!(back, header, "seed {seed}");
            assert_eq!(used, HEADER_LEN, "seed {seed}");
            for cut in 0..bytes.len() {
                assert!(
                    ReqHeader::pull(&bytes[..cut]).is_err(),
                    "seed {seed} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn header_layout_matches_c() {
        let header = ReqHeader {
            length: 64,
            ..ReqHeader::new(0x5211_f4c0, Operation::ReqControl, CURRENT_NODE, 2, 0x65)
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes[0..4], &[64, 0, 0, 0]);
        assert_eq!(&bytes[4..8], b"BDTC");
        assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
        assert_eq!(&bytes[12..16], &[0xc0, 0xf4, 0x11, 0x52]);
        assert_eq!(&bytes[16..20], &[7, 0, 0, 0]);
        assert_eq!(&bytes[20..24], &[1, 0, 0, 0xf0]);
        assert_eq!(&bytes[24..28], &[2, 0, 0, 0]);
        assert_eq!(&bytes[28..32], &[0x65, 0, 0, 0]);
    }

    #[test]
    fn verify_checks_like_stock() {
        let good = ReqHeader {
            length: 60,
            ..ReqHeader::new(0, Operation::ReqControl, CURRENT_NODE, 0, 1)
        };
        assert_eq!(good.verify(), Ok(()));
        // A client may send an unpadded packet; a node may not.
        assert!(good.verify_node().is_err());
        assert_eq!(ReqHeader { length: 64, ..good }.verify_node(), Ok(()));
        assert!(ReqHeader { length: 31, ..good }.verify().is_err());
        assert!(ReqHeader { length: 0, ..good }.verify_node().is_err());
        assert_eq!(
            ReqHeader { magic: 0, ..good }.verify(),
            Err(PullError::BadMagic(0))
        );
        assert_eq!(
            ReqHeader { version: 2, ..good }.verify(),
            Err(PullError::BadVersion(2))
        );
        assert_eq!(PullError::BadMagic(0).to_errno(), 71);
    }

    #[test]
    fn operations_keep_unknown_values() {
        assert_eq!(Operation::from(6), Operation::Unknown(6));
        assert_eq!(u32::from(Operation::ReqTunnel), 10);
        assert_eq!(Operation::ReqKeepalive.name(), "REQ_KEEPALIVE");
        assert_eq!(Operation::ALL.len(), 10);
        for raw in 0..64u32 {
            assert_eq!(u32::from(Operation::from(raw)), raw);
        }
        assert!(is_broadcast(BROADCAST_CONNECTED));
        assert!(!is_broadcast(CURRENT_NODE));
    }
}
