//! Many client connections driven from one thread with `mio`.
//!
//! The blocking [`crate::client::Client`] serves one request at a time; load generators need
//! dozens of connections in flight at once without threads. A [`Conn`] speaks the same wire
//! format as the client library (packets padded to 8) over a non-blocking socket, and a
//! [`Pump`] waits for readiness on all of them and hands back whole packets.

use crate::client::{ClientError, MAX_FRAME_LEN};
use crate::protocol::header::CURRENT_NODE;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{FrameError, FrameReader, Packet, Padding};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::Duration;

/// One non-blocking connection to a daemon's unix socket.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    reader: FrameReader,
    /// Bytes queued but not yet accepted by the kernel, from `out_pos` on.
    outbox: Vec<u8>,
    out_pos: usize,
    next_reqid: u32,
    closed: bool,
}

impl Conn {
    /// Connects (blocking, so a full listen backlog waits instead of failing), then switches
    /// the socket to non-blocking mode.
    pub fn connect(path: &Path) -> Result<Conn, ClientError> {
        let std_stream = std::os::unix::net::UnixStream::connect(path)?;
        std_stream.set_nonblocking(true)?;
        Ok(Conn {
            stream: UnixStream::from_std(std_stream),
            reader: FrameReader::new(MAX_FRAME_LEN),
            outbox: Vec::new(),
            out_pos: 0,
            next_reqid: 1,
            closed: false,
        })
    }

    /// Wraps an accepted or connected non-blocking stream (the test daemon's side).
    #[cfg(test)]
    pub(crate) fn from_stream(stream: UnixStream) -> Conn {
        Conn {
            stream,
            reader: FrameReader::new(MAX_FRAME_LEN),
            outbox: Vec::new(),
            out_pos: 0,
            next_reqid: 1,
            closed: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn stream_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    fn alloc_reqid(&mut self) -> u32 {
        let id = self.next_reqid;
        self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
        id
    }

    /// Queues a packet and writes as much as the socket takes now.
    pub fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        packet.encode_into(Padding::Align8, &mut self.outbox);
        self.flush()
    }

    /// Sends a control and returns its request id.
    pub fn send_control(
        &mut self,
        destnode: u32,
        opcode: ControlOpcode,
        srvid: u64,
        data: Vec<u8>,
    ) -> Result<u32, ClientError> {
        let reqid = self.alloc_reqid();
        self.send(&Packet::client_control(
            destnode, reqid, opcode, srvid, 0, data,
        ))?;
        Ok(reqid)
    }

    /// REGISTER_SRVID on the local daemon; returns the request id to wait for.
    pub fn send_register_srvid(&mut self, srvid: u64) -> Result<u32, ClientError> {
        self.send_control(
            CURRENT_NODE,
            ControlOpcode::RegisterSrvid,
            srvid,
            Vec::new(),
        )
    }

    pub fn send_message(
        &mut self,
        destnode: u32,
        srvid: u64,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.send(&Packet::client_message(destnode, srvid, data))
    }

    /// Writes queued bytes until done or the socket would block.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        while self.out_pos < self.outbox.len() {
            let pending = self.outbox.get(self.out_pos..).unwrap_or_default();
            match self.stream.write(pending) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        self.outbox.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.outbox.len() - self.out_pos
    }

    /// Reads until the socket would block and appends every whole packet to `out`.
    /// Readiness is edge-triggered, so stopping early would lose the wake-up.
    pub fn receive(&mut self, out: &mut Vec<Packet>) -> Result<(), ClientError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.reader.feed(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        loop {
            match self.reader.next_frame() {
                Ok(Some(frame)) => out
                    .push(Packet::pull(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?),
                Ok(None) => break,
                Err(FrameError::TooShort { .. }) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
        }
        if self.closed && out.is_empty() {
            return Err(ClientError::Closed);
        }
        Ok(())
    }
}

/// A set of connections and the poll that watches them. Connection `i` has token `i`.
#[derive(Debug)]
pub struct Pump {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    received: Vec<Packet>,
}

impl Pump {
    pub fn new() -> Result<Pump, ClientError> {
        Ok(Pump {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Vec::new(),
            received: Vec::new(),
        })
    }

    /// Connects to `path`; returns the new connection's index.
    pub fn connect(&mut self, path: &Path) -> Result<usize, ClientError> {
        let mut conn = Conn::connect(path)?;
        let index = self.conns.len();
        self.poll.registry().register(
            &mut conn.stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns.push(conn);
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn conn(&mut self, index: usize) -> Result<&mut Conn, ClientError> {
        self.conns
            .get_mut(index)
            .ok_or_else(|| ClientError::Protocol(format!("no connection {index}")))
    }

    /// Waits up to `timeout` for readiness, then calls `on_packet(index, packet)` for every
    /// packet that arrived. A closed connection is an error: benchmarks never close early.
    pub fn turn<F>(&mut self, timeout: Duration, mut on_packet: F) -> Result<(), ClientError>
    where
        F: FnMut(&mut Conn, usize, Packet) -> Result<(), ClientError>,
    {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(ClientError::Io(e)),
        }
        for event in &self.events {
            let index = event.token().0;
            let Some(conn) = self.conns.get_mut(index) else {
                continue;
            };
            if event.is_writable() && conn.unsent() > 0 {
                conn.flush()?;
            }
            if event.is_readable() || event.is_read_closed() {
                self.received.clear();
                conn.receive(&mut self.received)?;
                for packet in self.received.drain(..) {
                    on_packet(conn, index, packet)?;
                }
            }
        }
        Ok(())
    }
}
