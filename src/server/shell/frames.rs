//! Stream framing and the header checks the shell applies before a frame reaches the core
//! (mirrors `common/ctdb_io.c:queue_process`, `server/ctdb_daemon.c:ctdb_daemon_read_cb` and
//! `tcp/tcp_io.c:ctdb_tcp_read_cb`).
//!
//! Interim: this is a private stand-in with the same interface as `protocol::packet::FrameReader`
//! and `protocol::header::ReqHeader::verify{,_node}` from the `packets` branch; it goes away when
//! that lands in main.

/// `"CTDB"` read as a host-order u32.
pub const CTDB_MAGIC: u32 = 0x4354_4442;
/// `CTDB_PROTOCOL`.
pub const CTDB_PROTOCOL: u32 = 1;
/// `sizeof(struct ctdb_req_header)`.
pub const HEADER_LEN: usize = 32;
/// `CTDB_TCP_ALIGNMENT`: node packets must be a multiple of it.
pub const NODE_ALIGNMENT: usize = 8;

/// Why a stream cannot yield the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length word of 0, fatal for the connection as in stock.
    ZeroLength,
    /// A frame shorter than a header; it has been consumed.
    TooShort { length: u32 },
    /// A frame longer than the reader's limit; fatal for the connection.
    TooLong { length: u32, max: u32 },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::ZeroLength => write!(f, "packet of length 0"),
            FrameError::TooShort { length } => write!(f, "packet of length {length} is too short"),
            FrameError::TooLong { length, max } => {
                write!(f, "packet of length {length} exceeds the limit of {max}")
            }
        }
    }
}

/// Cuts a byte stream into length-prefixed frames. A zero or oversized length poisons the
/// reader, since the stream position is lost.
#[derive(Debug, Clone)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    max_frame: u32,
    fatal: Option<FrameError>,
}

impl FrameReader {
    pub fn new(max_frame: u32) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            max_frame,
            fatal: None,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(error) = self.fatal {
            return Err(error);
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(length) = read_u32(pending, 0) else {
            return Ok(None);
        };
        if length == 0 {
            self.fatal = Some(FrameError::ZeroLength);
            return Err(FrameError::ZeroLength);
        }
        if length > self.max_frame {
            let error = FrameError::TooLong {
                length,
                max: self.max_frame,
            };
            self.fatal = Some(error);
            return Err(error);
        }
        let size = length as usize;
        let Some(frame) = pending.get(..size) else {
            return Ok(None);
        };
        let frame = frame.to_vec();
        self.consume(size);
        if size < HEADER_LEN {
            return Err(FrameError::TooShort { length });
        }
        Ok(Some(frame))
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 && self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

/// What is wrong with a frame's header, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    Unaligned(usize),
    BadMagic(u32),
    BadVersion(u32),
}

impl std::fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderFault::Unaligned(len) => write!(f, "length 0x{len:x} not multiple of alignment"),
            HeaderFault::BadMagic(m) => write!(f, "non CTDB packet 0x{m:x} rejected"),
            HeaderFault::BadVersion(v) => write!(f, "bad CTDB version 0x{v:x} rejected"),
        }
    }
}

/// The magic and version checks `ctdb_daemon_read_cb` applies to client frames (which it drops
/// on failure). `frame` is at least [`HEADER_LEN`] long when it comes from a [`FrameReader`].
pub fn check_client_header(frame: &[u8]) -> Result<(), HeaderFault> {
    let magic = read_u32(frame, 4).unwrap_or(0);
    if magic != CTDB_MAGIC {
        return Err(HeaderFault::BadMagic(magic));
    }
    let version = read_u32(frame, 8).unwrap_or(0);
    if version != CTDB_PROTOCOL {
        return Err(HeaderFault::BadVersion(version));
    }
    Ok(())
}

/// The stricter checks of `ctdb_tcp_read_cb` for node frames, where a failure marks the node
/// dead: additionally the length must be a multiple of 8.
pub fn check_node_header(frame: &[u8]) -> Result<(), HeaderFault> {
    if !frame.len().is_multiple_of(NODE_ALIGNMENT) {
        return Err(HeaderFault::Unaligned(frame.len()));
    }
    check_client_header(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{seeds, Prng};

    fn header(len: u32, magic: u32, version: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&magic.to_ne_bytes());
        v.extend_from_slice(&version.to_ne_bytes());
        v.resize(len as usize, 0);
        v
    }

    #[test]
    fn frames_survive_any_chunking() {
        for seed in seeds(20) {
            let mut rng = Prng::new(seed);
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..20 {
                let len = 32 + rng.below(100) as u32;
                let mut f = header(len, CTDB_MAGIC, CTDB_PROTOCOL);
                for b in f.iter_mut().skip(12) {
                    *b = rng.u8();
                }
                stream.extend_from_slice(&f);
                expected.push(f);
            }
            let mut reader = FrameReader::new(1024);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = (1 + rng.below(50) as usize).min(rest.len());
                reader.feed(&rest[..n]);
                rest = &rest[n..];
                while let Some(f) = reader.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, expected, "seed {seed}");
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn zero_and_oversized_lengths_poison_short_ones_do_not() {
        let mut r = FrameReader::new(100);
        r.feed(&0u32.to_ne_bytes());
        assert_eq!(r.next_frame(), Err(FrameError::ZeroLength));
        assert_eq!(r.next_frame(), Err(FrameError::ZeroLength));

        let mut r = FrameReader::new(100);
        r.feed(&101u32.to_ne_bytes());
        assert!(matches!(r.next_frame(), Err(FrameError::TooLong { .. })));

        let mut r = FrameReader::new(100);
        r.feed(&header(8, 0, 0));
        r.feed(&header(32, CTDB_MAGIC, CTDB_PROTOCOL));
        assert_eq!(r.next_frame(), Err(FrameError::TooShort { length: 8 }));
        assert!(r.next_frame().unwrap().is_some());
    }

    #[test]
    fn header_checks() {
        assert!(check_client_header(&header(60, CTDB_MAGIC, CTDB_PROTOCOL)).is_ok());
        assert!(check_node_header(&header(60, CTDB_MAGIC, CTDB_PROTOCOL)).is_err());
        assert!(check_node_header(&header(64, CTDB_MAGIC, CTDB_PROTOCOL)).is_ok());
        assert_eq!(
            check_client_header(&header(32, 7, CTDB_PROTOCOL)),
            Err(HeaderFault::BadMagic(7))
        );
        assert_eq!(
            check_client_header(&header(32, CTDB_MAGIC, 2)),
            Err(HeaderFault::BadVersion(2))
        );
    }
}
