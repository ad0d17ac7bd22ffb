//! A blocking client of the daemon's unix socket (mirrors the synchronous parts of
//! `ctdb/client/`).
//!
//! Used by our tools, benchmarks and tests; it speaks exactly what the stock client library
//! speaks (packets padded to 8), so it works against stock ctdbd as well as ours. One request
//! at a time: a control waits for its reply, and messages that arrive meanwhile are queued for
//! [`Client::recv_message`].

pub mod db;

use crate::protocol::header::CURRENT_NODE;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{
    Body, FrameError, FrameReader, Packet, Padding, ReplyCall, ReplyControl, ReqCall,
    CTRL_FLAG_NOREPLY,
};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest frame the client accepts (GET_STAT_HISTORY replies are ~48 KB; database pulls
/// stream records of up to `RecBufferSizeLimit`).
pub const MAX_FRAME_LEN: u32 = 64 * 1024 * 1024;

/// How long a control waits for its reply unless told otherwise (the CLI's `-t` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum ClientError {
    Io(std::io::Error),
    /// The daemon closed the connection.
    Closed,
    /// No reply within the timeout.
    Timeout,
    /// The daemon sent something that is not a valid packet.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Closed => write!(f, "connection closed by ctdbd"),
            ClientError::Timeout => write!(f, "timed out waiting for ctdbd"),
            ClientError::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout,
            _ => ClientError::Io(e),
        }
    }
}

/// A message delivered to one of this client's srvids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub srvid: u64,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: FrameReader,
    next_reqid: u32,
    messages: VecDeque<Message>,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket)?;
        Ok(Client {
            stream,
            reader: FrameReader::new(MAX_FRAME_LEN),
            next_reqid: 1,
            messages: VecDeque::new(),
        })
    }

    fn alloc_reqid(&mut self) -> u32 {
        let id = self.next_reqid;
        self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
        id
    }

    fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.stream.write_all(&packet.encode(Padding::Align8))?;
        Ok(())
    }

    /// Reads the next frame, waiting at most until `deadline`.
    fn next_packet(&mut self, deadline: Instant) -> Result<Packet, ClientError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.reader.next_frame() {
                Ok(Some(frame)) => {
                    return Packet::pull(&frame).map_err(|e| ClientError::Protocol(e.to_string()))
                }
                Ok(None) => {}
                Err(FrameError::TooShort { .. }) => continue,
                Err(e) => return Err(ClientError::Protocol(format!("{e:?}"))),
            }
            #[allow(clippy::disallowed_methods)] // Client-side timeout, outside any state machine.
            let now = Instant::now();
            let left = deadline
                .checked_duration_since(now)
                .ok_or(ClientError::Timeout)?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.reader.feed(&buf[..n]);
        }
    }

    /// Sends a control and waits for its reply.
    pub fn control(
        &mut self,
        destnode: u32,
        opcode: ControlOpcode,
        srvid: u64,
        flags: u32,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<ReplyControl, ClientError> {
        let reqid = self.alloc_reqid();
        self.send(&Packet::client_control(
            destnode, reqid, opcode, srvid, flags, data,
        ))?;
        #[allow(clippy::disallowed_methods)] // Client-side timeout, outside any state machine.
        let deadline = Instant::now() + timeout;
        loop {
            let packet = self.next_packet(deadline)?;
            match packet.body {
                Body::ReplyControl(r) if packet.reqid == reqid => return Ok(r),
                Body::ReqMessage(m) => self.messages.push_back(Message {
                    srvid: m.srvid,
                    data: m.data,
                }),
                _ => {}
            }
        }
    }

    /// Sends a record call (REQ_CALL) and waits for its REPLY_CALL. A REPLY_ERROR for the
    /// call becomes a reply with the error's status. Messages that arrive meanwhile are queued.
    pub fn call(
        &mut self,
        destnode: u32,
        call: ReqCall,
        timeout: Duration,
    ) -> Result<ReplyCall, ClientError> {
        let reqid = self.send_call(destnode, call)?;
        self.wait_call(reqid, timeout)
    }

    /// Sends a REQ_CALL without waiting; returns its request id for [`Client::wait_call`].
    pub fn send_call(&mut self, destnode: u32, call: ReqCall) -> Result<u32, ClientError> {
        let reqid = self.alloc_reqid();
        self.send(&Packet {
            generation: 0,
            destnode,
            srcnode: 0,
            reqid,
            body: Body::ReqCall(call),
        })?;
        Ok(reqid)
    }

    /// Waits for the REPLY_CALL (or REPLY_ERROR) of a call sent with [`Client::send_call`].
    pub fn wait_call(&mut self, reqid: u32, timeout: Duration) -> Result<ReplyCall, ClientError> {
        #[allow(clippy::disallowed_methods)] // Client-side timeout, outside any state machine.
        let deadline = Instant::now() + timeout;
        loop {
            let packet = self.next_packet(deadline)?;
            match packet.body {
                Body::ReplyCall(r) if packet.reqid == reqid => return Ok(r),
                Body::ReplyError(e) if packet.reqid == reqid => {
                    return Ok(ReplyCall {
                        status: if e.status == 0 { -1 } else { e.status },
                        data: e.msg,
                    })
                }
                Body::ReqMessage(m) => self.messages.push_back(Message {
                    srvid: m.srvid,
                    data: m.data,
                }),
                _ => {}
            }
        }
    }

    /// Sends a control that wants no reply (`CTDB_CTRL_FLAG_NOREPLY`).
    pub fn control_noreply(
        &mut self,
        destnode: u32,
        opcode: ControlOpcode,
        srvid: u64,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        let reqid = self.alloc_reqid();
        self.send(&Packet::client_control(
            destnode,
            reqid,
            opcode,
            srvid,
            CTRL_FLAG_NOREPLY,
            data,
        ))
    }

    /// A control whose whole answer is its status (GET_PNN, PING, GET_PID, ...).
    pub fn control_status(
        &mut self,
        destnode: u32,
        opcode: ControlOpcode,
    ) -> Result<i32, ClientError> {
        Ok(self
            .control(destnode, opcode, 0, 0, Vec::new(), DEFAULT_TIMEOUT)?
            .status)
    }

    pub fn get_pnn(&mut self) -> Result<u32, ClientError> {
        let status = self.control_status(CURRENT_NODE, ControlOpcode::GetPnn)?;
        u32::try_from(status).map_err(|_| ClientError::Protocol(format!("GET_PNN status {status}")))
    }

    pub fn register_srvid(&mut self, srvid: u64) -> Result<i32, ClientError> {
        let r = self.control(
            CURRENT_NODE,
            ControlOpcode::RegisterSrvid,
            srvid,
            0,
            Vec::new(),
            DEFAULT_TIMEOUT,
        )?;
        Ok(r.status)
    }

    pub fn deregister_srvid(&mut self, srvid: u64) -> Result<i32, ClientError> {
        let r = self.control(
            CURRENT_NODE,
            ControlOpcode::DeregisterSrvid,
            srvid,
            0,
            Vec::new(),
            DEFAULT_TIMEOUT,
        )?;
        Ok(r.status)
    }

    /// REGISTER_NOTIFY: when this client disconnects, the daemon sends `data` to `srvid` on
    /// every connected node.
    pub fn register_notify(&mut self, srvid: u64, data: &[u8]) -> Result<i32, ClientError> {
        let notify = crate::protocol::types::NotifyData {
            srvid,
            data: data.to_vec(),
        };
        let r = self.control(
            CURRENT_NODE,
            ControlOpcode::RegisterNotify,
            0,
            0,
            crate::protocol::Marshal::to_bytes(&notify),
            DEFAULT_TIMEOUT,
        )?;
        Ok(r.status)
    }

    /// DEREGISTER_NOTIFY: forgets a notification registered by this client.
    pub fn deregister_notify(&mut self, srvid: u64) -> Result<i32, ClientError> {
        let r = self.control(
            CURRENT_NODE,
            ControlOpcode::DeregisterNotify,
            0,
            0,
            srvid.to_ne_bytes().to_vec(),
            DEFAULT_TIMEOUT,
        )?;
        Ok(r.status)
    }

    /// Sends a message to `srvid` on `destnode` (a PNN or a broadcast address).
    pub fn send_message(
        &mut self,
        destnode: u32,
        srvid: u64,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.send(&Packet::client_message(destnode, srvid, data))
    }

    /// The next message for one of this client's srvids.
    pub fn recv_message(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        if let Some(m) = self.messages.pop_front() {
            return Ok(m);
        }
        #[allow(clippy::disallowed_methods)] // Client-side timeout, outside any state machine.
        let deadline = Instant::now() + timeout;
        loop {
            let packet = self.next_packet(deadline)?;
            if let Body::ReqMessage(m) = packet.body {
                return Ok(Message {
                    srvid: m.srvid,
                    data: m.data,
                });
            }
        }
    }

    /// Writes raw bytes, for tests that probe how the daemon copes with malformed input.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }
}
