//! Per-connection output queues and bounded reads (the I/O half of `common/ctdb_io.c`).
//!
//! Stock queues are unbounded: a peer that stops reading makes ctdbd grow without limit. Ours
//! have an explicit limit in bytes and in frames; exceeding it is the caller's cue to drop the
//! connection, which every CTDB peer already has to survive.

use crate::protocol::packet::FrameReader;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Limits of one output queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_bytes: usize,
    pub max_frames: usize,
}

/// The queue would exceed its limits; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    pub bytes: usize,
    pub frames: usize,
}

impl std::fmt::Display for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "output queue full ({} bytes in {} frames)",
            self.bytes, self.frames
        )
    }
}

/// Frames waiting to be written, the first possibly partly written.
#[derive(Debug)]
pub struct WriteQueue {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the front frame already written.
    offset: usize,
    /// Bytes not yet written, over all frames.
    bytes: usize,
    limits: QueueLimits,
}

impl WriteQueue {
    pub fn new(limits: QueueLimits) -> Self {
        WriteQueue {
            frames: VecDeque::new(),
            offset: 0,
            bytes: 0,
            limits,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, frame: Vec<u8>) -> Result<(), QueueFull> {
        if frame.is_empty() {
            return Ok(());
        }
        let bytes = self.bytes.saturating_add(frame.len());
        // A single frame larger than the byte limit is still accepted into an empty queue, so a
        // legitimate large reply is never refused outright.
        if (bytes > self.limits.max_bytes && !self.frames.is_empty())
            || self.frames.len() >= self.limits.max_frames
        {
            return Err(QueueFull {
                bytes: self.bytes,
                frames: self.frames.len(),
            });
        }
        self.bytes = bytes;
        self.frames.push_back(frame);
        Ok(())
    }

    /// Writes until the queue is empty or the socket would block. Errors other than
    /// `WouldBlock`/`Interrupted` are returned and leave the queue as it was.
    pub fn flush(&mut self, out: &mut impl Write) -> io::Result<()> {
        while let Some(front) = self.frames.front() {
            let rest = front.get(self.offset..).unwrap_or_default();
            match out.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.offset += n;
                    self.bytes = self.bytes.saturating_sub(n);
                    if self.offset >= front.len() {
                        self.frames.pop_front();
                        self.offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What a bounded read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket has nothing more for now.
    Drained,
    /// The budget ran out with data possibly left: read again next turn.
    BudgetSpent,
    /// The peer closed its end.
    Eof,
}

/// How far [`read_bounded`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Until `WouldBlock` (or EOF): needed when the peer may have closed, since the hang-up
    /// raises no further edge once this readiness event is consumed.
    UntilWouldBlock,
    /// Stop as soon as a read returns less than the buffer holds: the socket was empty at that
    /// moment, and any byte (or hang-up) arriving later raises a new edge-triggered event. This
    /// saves the extra `recv` that only returns `EAGAIN` on every wake-up of a busy link.
    UntilShortRead,
}

/// Reads from `src` into `sink` until `WouldBlock`, EOF, a short read (with
/// [`ReadMode::UntilShortRead`]), or `budget` bytes, using `scratch` as the read buffer (a
/// buffer kept by the caller, so it is not cleared on every call). Bytes read before an EOF
/// or error are still handed to `sink`.
pub fn read_bounded(
    src: &mut impl Read,
    budget: usize,
    mode: ReadMode,
    scratch: &mut [u8],
    mut sink: impl FnMut(&[u8]),
) -> io::Result<ReadOutcome> {
    debug_assert!(!scratch.is_empty());
    let mut total = 0usize;
    while total < budget {
        match src.read(scratch) {
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(n) => {
                total += n;
                sink(scratch.get(..n).unwrap_or_default());
                if n < scratch.len() && mode == ReadMode::UntilShortRead {
                    return Ok(ReadOutcome::Drained);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReadOutcome::BudgetSpent)
}

/// [`read_bounded`] straight into `reader`'s buffer: no scratch copy, and a large frame
/// lands in a buffer of its own that [`FrameReader::next_frame`] hands over whole. Reads of
/// `chunk` bytes, or of exactly the rest of a large frame.
pub fn read_frames_bounded(
    src: &mut impl Read,
    budget: usize,
    mode: ReadMode,
    chunk: usize,
    reader: &mut FrameReader,
) -> io::Result<ReadOutcome> {
    let mut total = 0usize;
    while total < budget {
        let space = reader.read_space(chunk);
        let room = space.len();
        match src.read(space) {
            Ok(0) => return Ok(ReadOutcome::Eof),
            Ok(n) => {
                reader.commit(n);
                total += n;
                if n < room && mode == ReadMode::UntilShortRead {
                    return Ok(ReadOutcome::Drained);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReadOutcome::BudgetSpent)
}

/// Size of the read buffers of client and node links.
pub const READ_SCRATCH_BYTES: usize = 16 * 1024;

/// Registers `source` for writability exactly while `queue` holds unwritten bytes. Turning the
/// interest on re-arms the edge, so a socket that became writable meanwhile still reports it.
pub fn update_write_interest(
    registry: &Registry,
    source: &mut impl mio::event::Source,
    token: Token,
    queue: &WriteQueue,
    write_interest: &mut bool,
) -> io::Result<()> {
    let want = !queue.is_empty();
    if want != *write_interest {
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry.reregister(source, token, interest)?;
        *write_interest = want;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `room` bytes, then would block.
    struct Trickle {
        written: Vec<u8>,
        room: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room).min(3);
            self.room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_in_order() {
        let mut q = WriteQueue::new(QueueLimits {
            max_bytes: 100,
            max_frames: 10,
        });
        q.push(vec![1; 10]).unwrap();
        q.push(vec![2; 5]).unwrap();
        assert_eq!(q.pending_bytes(), 15);
        let mut w = Trickle {
            written: Vec::new(),
            room: 7,
        };
        q.flush(&mut w).unwrap();
        assert_eq!(q.pending_bytes(), 8);
        w.room = 100;
        q.flush(&mut w).unwrap();
        assert!(q.is_empty());
        let mut expected = vec![1; 10];
        expected.extend_from_slice(&[2; 5]);
        assert_eq!(w.written, expected);
    }

    #[test]
    fn limits_refuse_without_queueing() {
        let mut q = WriteQueue::new(QueueLimits {
            max_bytes: 10,
            max_frames: 2,
        });
        q.push(vec![0; 50]).unwrap(); // one oversized frame into an empty queue is allowed
        assert!(q.push(vec![0; 1]).is_err());
        let mut q = WriteQueue::new(QueueLimits {
            max_bytes: 100,
            max_frames: 2,
        });
        q.push(vec![0; 1]).unwrap();
        q.push(vec![0; 1]).unwrap();
        assert_eq!(
            q.push(vec![0; 1]),
            Err(QueueFull {
                bytes: 2,
                frames: 2
            })
        );
    }

    #[test]
    fn bounded_read_stops_at_budget_and_reports_eof() {
        let data = vec![7u8; 40_000];
        let mut src = &data[..];
        let mut got = Vec::new();
        let mut scratch = vec![0u8; READ_SCRATCH_BYTES];
        let wait = ReadMode::UntilWouldBlock;
        let outcome = read_bounded(&mut src, 20_000, wait, &mut scratch, |b| {
            got.extend_from_slice(b)
        })
        .unwrap();
        assert_eq!(outcome, ReadOutcome::BudgetSpent);
        let outcome = read_bounded(&mut src, 1 << 20, wait, &mut scratch, |b| {
            got.extend_from_slice(b)
        })
        .unwrap();
        assert_eq!(outcome, ReadOutcome::Eof);
        assert_eq!(got, data);
    }

    /// A source that hands out at most `chunk` bytes per read, then `WouldBlock` when empty,
    /// counting the reads.
    struct Chunked {
        data: Vec<u8>,
        chunk: usize,
        reads: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.data.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.chunk).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn short_read_mode_skips_the_read_that_would_block() {
        let mut scratch = vec![0u8; 64];
        for (mode, reads) in [
            (ReadMode::UntilShortRead, 1),
            (ReadMode::UntilWouldBlock, 2),
        ] {
            let mut src = Chunked {
                data: vec![1; 10],
                chunk: 100,
                reads: 0,
            };
            let mut got = Vec::new();
            let outcome = read_bounded(&mut src, 1 << 20, mode, &mut scratch, |b| {
                got.extend_from_slice(b)
            })
            .unwrap();
            assert_eq!(outcome, ReadOutcome::Drained);
            assert_eq!((got.len(), src.reads), (10, reads), "{mode:?}");
        }
        // Full reads keep going in either mode: only a short one ends the call early.
        let mut src = Chunked {
            data: vec![2; 200],
            chunk: 64,
            reads: 0,
        };
        let mut got = Vec::new();
        read_bounded(
            &mut src,
            1 << 20,
            ReadMode::UntilShortRead,
            &mut scratch,
            |b| got.extend_from_slice(b),
        )
        .unwrap();
        assert_eq!((got.len(), src.reads), (200, 4));
    }

    /// A length-prefixed frame of `len` bytes filled with `fill`.
    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        f
    }

    #[test]
    fn frames_read_in_place_come_out_whole_and_within_budget() {
        let frames = [
            frame(100, 1),
            frame(200_000, 2),
            frame(40, 3),
            frame(70_000, 4),
        ];
        let mut src = Chunked {
            data: frames.concat(),
            chunk: 30_000,
            reads: 0,
        };
        let mut reader = FrameReader::new(1 << 20);
        let mut got = Vec::new();
        let wait = ReadMode::UntilWouldBlock;
        loop {
            let outcome = read_frames_bounded(&mut src, 50_000, wait, 4096, &mut reader).unwrap();
            while let Some(f) = reader.next_frame().unwrap() {
                got.push(f);
            }
            match outcome {
                ReadOutcome::BudgetSpent => continue,
                ReadOutcome::Drained => break,
                ReadOutcome::Eof => unreachable!("the source never ends"),
            }
        }
        assert_eq!(got, frames);
        assert_eq!(reader.buffered(), 0);
    }
}
