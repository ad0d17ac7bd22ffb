//! Whole packets: the header plus one of the eleven operation bodies, and stream framing.
//!
//! Mirrors `ctdb/protocol/protocol_call.c`, `protocol_message.c`, `protocol_control.c`
//! (packet level only), `protocol_keepalive.c`, `protocol_tunnel.c` and `protocol_packet.c`,
//! plus the raw `*_old` structs of `ctdb/include/ctdb_protocol.h` that the daemon itself uses.
//!
//! Bodies keep their payloads as raw bytes: what a control's data or a message's payload means
//! depends on the opcode or srvid, and is decoded one layer up. Two details of stock CTDB shape
//! this module:
//!
//! * Padding differs by writer (see [`Padding`]): smbd sends exact lengths, the client library
//!   rounds up to 8, the daemon also never goes below `sizeof` of the old C struct. `hdr.length`
//!   always includes the padding, and every inner length is exact, so a decoder reads inner
//!   lengths and ignores whatever follows within `hdr.length`.
//! * Two bodies have optional tails that only `hdr.length` delimits: the record-flags word after
//!   REQ/REPLY_DMASTER key and data, and the version/uptime of a keepalive. A decoder reads them
//!   when `hdr.length` leaves room, exactly as `server/ctdb_call.c` and
//!   `server/ctdb_keepalive.c` do, so zero padding can read back as flags 0.

use super::basic::{padding_len, Marshal, PullError, Reader, Writer};
use super::header::{
    Operation, ReqHeader, CTDB_MAGIC, CTDB_PROTOCOL, HEADER_LEN, PACKET_ALIGNMENT,
};
use super::opcode::ControlOpcode;

/// REQ_CALL flag: migrate the record to the caller even for a read.
pub const CALL_FLAG_IMMEDIATE_MIGRATION: u32 = 0x0000_0001;
/// REQ_CALL flag: the migration was requested by the vacuuming code.
pub const CALL_FLAG_VACUUM_MIGRATION: u32 = 0x0000_0002;
/// REQ_CALL flag: a read-only delegation is wanted (`CTDB_WANT_READONLY`).
pub const CALL_FLAG_WANT_READONLY: u32 = 0x0000_0004;

/// Call id that only migrates the record.
pub const NULL_FUNC: u32 = 0xFF00_0001;
/// Call id that returns the record data.
pub const FETCH_FUNC: u32 = 0xFF00_0002;
/// Call id that returns the ltdb header followed by the record data.
pub const FETCH_WITH_HEADER_FUNC: u32 = 0xFF00_0003;

/// Control flag: the sender wants no reply.
pub const CTRL_FLAG_NOREPLY: u32 = 0x0000_0001;
/// Control flag bits whose meaning depends on the opcode.
pub const CTRL_FLAG_OPCODE_SPECIFIC: u32 = 0xFFFF_0000;
/// GET_PUBLIC_IPS flag: only addresses that can be hosted right now.
pub const PUBLIC_IP_FLAGS_ONLY_AVAILABLE: u32 = 0x0001_0000;
/// DB_ATTACH* flag: the attach comes from the recovery process.
pub const CTRL_FLAG_ATTACH_RECOVERY: u32 = 0x0002_0000;

/// Tunnel flag: a request.
pub const TUNNEL_FLAG_REQUEST: u32 = 0x0000_0001;
/// Tunnel flag: a reply.
pub const TUNNEL_FLAG_REPLY: u32 = 0x0000_0002;
/// Tunnel flag: no reply wanted.
pub const TUNNEL_FLAG_NOREPLY: u32 = 0x0000_0010;
/// Tunnel ids at and above this are reserved for tests.
pub const TUNNEL_TEST: u64 = 0xFFFF_FFFF_0000_0000;

/// What a 4.17 daemon puts in a keepalive: `(SAMBA_VERSION_MAJOR << 16) | SAMBA_VERSION_MINOR`.
pub const KEEPALIVE_VERSION: u32 = 0x0004_0011;

/// How much zero padding an encoder appends. `hdr.length` always covers the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// No padding: the exact length, as smbd (`source3/lib/ctdbd_conn.c`) writes.
    Exact,
    /// Exact length rounded up to 8, as the client library (`ctdb_allocate_pkt`) writes.
    Align8,
    /// `max(exact, sizeof(old C struct))` rounded up to 8, as the stock daemon writes
    /// (`ctdb_transport_allocate`/`ctdbd_allocate_pkt`, then `ctdb_queue_send`).
    Daemon,
}

impl Padding {
    /// The on-wire length of a packet whose content is `exact` bytes and whose old C struct is
    /// `c_struct_len` bytes.
    pub fn padded_len(self, exact: usize, c_struct_len: usize) -> usize {
        match self {
            Padding::Exact => exact,
            Padding::Align8 => exact + padding_len(exact),
            Padding::Daemon => {
                let len = exact.max(c_struct_len);
                len + padding_len(len)
            }
        }
    }
}

const _: () = assert!(PACKET_ALIGNMENT == 8);

/// REQ_CALL: run a call function on a record (`ctdb_req_call_old`, data at 56).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReqCall {
    pub flags: u32,
    pub db_id: u32,
    pub callid: u32,
    pub hopcount: u32,
    pub key: Vec<u8>,
    pub calldata: Vec<u8>,
}

/// REPLY_CALL: the result of a call (`ctdb_reply_call_old`, data at 40).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyCall {
    pub status: i32,
    pub data: Vec<u8>,
}

/// REQ_DMASTER: a node asks the lmaster to make it dmaster (`ctdb_req_dmaster_old`, data at 60).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReqDmaster {
    pub db_id: u32,
    pub rsn: u64,
    pub dmaster: u32,
    pub key: Vec<u8>,
    pub data: Vec<u8>,
    /// The ltdb record flags the daemon appends after key and data, outside both lengths.
    pub record_flags: Option<u32>,
}

/// REPLY_DMASTER: the lmaster hands the record to the new dmaster (`ctdb_reply_dmaster_old`,
/// data at 56).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyDmaster {
    pub db_id: u32,
    pub rsn: u64,
    pub key: Vec<u8>,
    pub data: Vec<u8>,
    /// The ltdb record flags the daemon appends after key and data, outside both lengths.
    pub record_flags: Option<u32>,
}

/// REPLY_ERROR: a call failed on a remote node (`ctdb_reply_error_old`, msg at 40).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyError {
    pub status: i32,
    /// The message as sent; the daemon includes the trailing NUL in `msglen`.
    pub msg: Vec<u8>,
}

/// REQ_MESSAGE: a payload for whoever registered `srvid` (`ctdb_req_message_old`, data at 44).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReqMessage {
    pub srvid: u64,
    pub data: Vec<u8>,
}

/// REQ_CONTROL: a control request (`ctdb_req_control_old`, data at 60). The `pad` word at 36
/// is written as zero and ignored on input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReqControl {
    pub opcode: ControlOpcode,
    pub srvid: u64,
    pub client_id: u32,
    pub flags: u32,
    pub data: Vec<u8>,
}

/// REPLY_CONTROL: a control result (`ctdb_reply_control_old`, data at 44, error after data).
///
/// Both error forms are kept byte for byte: the daemon sends `errorlen = strlen(msg)` without
/// a NUL and may send data too; the client library sends the NUL and no data when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyControl {
    pub status: i32,
    pub data: Vec<u8>,
    /// Raw error bytes; empty when there is no error message.
    pub errmsg: Vec<u8>,
}

/// REQ_KEEPALIVE: liveness plus the sender's version and uptime (`ctdb_req_keepalive_old`).
///
/// A pre-4.x keepalive is a bare 32-byte header and has neither field. The wire only tells
/// the two forms apart by `hdr.length`: 4 or more body bytes give `version`, 8 or more give
/// `uptime`. Encoding writes the fields in order, a missing `version` as 0 when `uptime` is
/// present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReqKeepalive {
    pub version: Option<u32>,
    /// Seconds since the sender started.
    pub uptime: Option<u32>,
}

/// REQ_TUNNEL: a payload for a registered tunnel (`ctdb_req_tunnel_old`, data at 48).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReqTunnel {
    pub tunnel_id: u64,
    pub flags: u32,
    pub data: Vec<u8>,
}

/// The part of a packet after the header, by operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    ReqCall(ReqCall),
    ReplyCall(ReplyCall),
    ReqDmaster(ReqDmaster),
    ReplyDmaster(ReplyDmaster),
    ReplyError(ReplyError),
    ReqMessage(ReqMessage),
    ReqControl(ReqControl),
    ReplyControl(ReplyControl),
    ReqKeepalive(ReqKeepalive),
    ReqTunnel(ReqTunnel),
    /// An operation this build does not know. `bytes` is everything after the header up to
    /// `hdr.length`, padding included, since nothing says where the content ends.
    Unknown {
        operation: u32,
        bytes: Vec<u8>,
    },
}

/// A decoded packet: the header fields that carry information, and the body. `length`, magic
/// and version are derived when encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub generation: u32,
    pub destnode: u32,
    pub srcnode: u32,
    pub reqid: u32,
    pub body: Body,
}

/// One operation's body layout. `C_STRUCT_LEN` is `sizeof(struct ctdb_*_old)`, which is what
/// the daemon's allocators never go below.
trait BodyWire: Sized {
    const OPERATION: Operation;
    const C_STRUCT_LEN: usize;
    fn body_len(&self) -> usize;
    fn push_body(&self, out: &mut Vec<u8>);
    /// `body` is the frame from the end of the header to `hdr.length`.
    fn pull_body(body: &[u8]) -> Result<Self, PullError>;
}

/// Takes `len` bytes announced by an inner length field, rejecting a length that runs past
/// the packet.
fn take<'a>(r: &mut Reader<'a>, len: u32, what: &'static str) -> Result<&'a [u8], PullError> {
    let len = len as usize;
    if len > r.remaining() {
        return Err(PullError::BadLength { what, value: len });
    }
    r.bytes(len)
}

/// Reads an optional trailing u32 that only `hdr.length` delimits.
fn optional_u32(r: &mut Reader<'_>) -> Result<Option<u32>, PullError> {
    if r.remaining() >= 4 {
        Ok(Some(r.u32()?))
    } else {
        Ok(None)
    }
}

impl BodyWire for ReqCall {
    const OPERATION: Operation = Operation::ReqCall;
    const C_STRUCT_LEN: usize = 60;
    fn body_len(&self) -> usize {
        24 + self.key.len() + self.calldata.len()
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_u32(self.flags);
        out.put_u32(self.db_id);
        out.put_u32(self.callid);
        out.put_u32(self.hopcount);
        out.put_len(self.key.len());
        out.put_len(self.calldata.len());
        out.put_bytes(&self.key);
        out.put_bytes(&self.calldata);
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let flags = r.u32()?;
        let db_id = r.u32()?;
        let callid = r.u32()?;
        let hopcount = r.u32()?;
        let keylen = r.u32()?;
        let calldatalen = r.u32()?;
        let key = take(&mut r, keylen, "REQ_CALL keylen")?.to_vec();
        let calldata = take(&mut r, calldatalen, "REQ_CALL calldatalen")?.to_vec();
        Ok(ReqCall {
            flags,
            db_id,
            callid,
            hopcount,
            key,
            calldata,
        })
    }
}

impl BodyWire for ReplyCall {
    const OPERATION: Operation = Operation::ReplyCall;
    const C_STRUCT_LEN: usize = 44;
    fn body_len(&self) -> usize {
        8 + self.data.len()
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_i32(self.status);
        out.put_datan(&self.data);
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let status = r.i32()?;
        let datalen = r.u32()?;
        let data = take(&mut r, datalen, "REPLY_CALL datalen")?.to_vec();
        Ok(ReplyCall { status, data })
    }
}

impl BodyWire for ReqDmaster {
    const OPERATION: Operation = Operation::ReqDmaster;
    const C_STRUCT_LEN: usize = 64;
    fn body_len(&self) -> usize {
        28 + self.key.len() + self.data.len() + if self.record_flags.is_some() { 4 } else { 0 }
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_u32(self.db_id);
        out.put_zeros(4);
        out.put_u64(self.rsn);
        out.put_u32(self.dmaster);
        out.put_len(self.key.len());
        out.put_len(self.data.len());
        out.put_bytes(&self.key);
        out.put_bytes(&self.data);
        if let Some(flags) = self.record_flags {
            out.put_u32(flags);
        }
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let db_id = r.u32()?;
        r.skip(4)?;
        let rsn = r.u64()?;
        let dmaster = r.u32()?;
        let keylen = r.u32()?;
        let datalen = r.u32()?;
        let key = take(&mut r, keylen, "REQ_DMASTER keylen")?.to_vec();
        let data = take(&mut r, datalen, "REQ_DMASTER datalen")?.to_vec();
        let record_flags = optional_u32(&mut r)?;
        Ok(ReqDmaster {
            db_id,
            rsn,
            dmaster,
            key,
            data,
            record_flags,
        })
    }
}

impl BodyWire for ReplyDmaster {
    const OPERATION: Operation = Operation::ReplyDmaster;
    const C_STRUCT_LEN: usize = 64;
    fn body_len(&self) -> usize {
        24 + self.key.len() + self.data.len() + if self.record_flags.is_some() { 4 } else { 0 }
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_u32(self.db_id);
        out.put_zeros(4);
        out.put_u64(self.rsn);
        out.put_len(self.key.len());
        out.put_len(self.data.len());
        out.put_bytes(&self.key);
        out.put_bytes(&self.data);
        if let Some(flags) = self.record_flags {
            out.put_u32(flags);
        }
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let db_id = r.u32()?;
        r.skip(4)?;
        let rsn = r.u64()?;
        let keylen = r.u32()?;
        let datalen = r.u32()?;
        let key = take(&mut r, keylen, "REPLY_DMASTER keylen")?.to_vec();
        let data = take(&mut r, datalen, "REPLY_DMASTER datalen")?.to_vec();
        let record_flags = optional_u32(&mut r)?;
        Ok(ReplyDmaster {
            db_id,
            rsn,
            key,
            data,
            record_flags,
        })
    }
}

impl BodyWire for ReplyError {
    const OPERATION: Operation = Operation::ReplyError;
    const C_STRUCT_LEN: usize = 44;
    fn body_len(&self) -> usize {
        8 + self.msg.len()
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_i32(self.status);
        out.put_datan(&self.msg);
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let status = r.i32()?;
        let msglen = r.u32()?;
        let msg = take(&mut r, msglen, "REPLY_ERROR msglen")?.to_vec();
        Ok(ReplyError { status, msg })
    }
}

impl BodyWire for ReqMessage {
    const OPERATION: Operation = Operation::ReqMessage;
    const C_STRUCT_LEN: usize = 48;
    fn body_len(&self) -> usize {
        12 + self.data.len()
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_u64(self.srvid);
        out.put_datan(&self.data);
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let srvid = r.u64()?;
        let datalen = r.u32()?;
        let data = take(&mut r, datalen, "REQ_MESSAGE datalen")?.to_vec();
        Ok(ReqMessage { srvid, data })
    }
}

impl BodyWire for ReqControl {
    const OPERATION: Operation = Operation::ReqControl;
    const C_STRUCT_LEN: usize = 64;
    fn body_len(&self) -> usize {
        28 + self.data.len()
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_u32(self.opcode.into());
        out.put_zeros(4);
        out.put_u64(self.srvid);
        out.put_u32(self.client_id);
        out.put_u32(self.flags);
        out.put_datan(&self.data);
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let opcode = ControlOpcode::from(r.u32()?);
        r.skip(4)?;
        let srvid = r.u64()?;
        let client_id = r.u32()?;
        let flags = r.u32()?;
        let datalen = r.u32()?;
        let data = take(&mut r, datalen, "REQ_CONTROL datalen")?.to_vec();
        Ok(ReqControl {
            opcode,
            srvid,
            client_id,
            flags,
            data,
        })
    }
}

impl BodyWire for ReplyControl {
    const OPERATION: Operation = Operation::ReplyControl;
    const C_STRUCT_LEN: usize = 48;
    fn body_len(&self) -> usize {
        12 + self.data.len() + self.errmsg.len()
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_i32(self.status);
        out.put_len(self.data.len());
        out.put_len(self.errmsg.len());
        out.put_bytes(&self.data);
        out.put_bytes(&self.errmsg);
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let status = r.i32()?;
        let datalen = r.u32()?;
        let errorlen = r.u32()?;
        let data = take(&mut r, datalen, "REPLY_CONTROL datalen")?.to_vec();
        let errmsg = take(&mut r, errorlen, "REPLY_CONTROL errorlen")?.to_vec();
        Ok(ReplyControl {
            status,
            data,
            errmsg,
        })
    }
}

impl BodyWire for ReqKeepalive {
    const OPERATION: Operation = Operation::ReqKeepalive;
    const C_STRUCT_LEN: usize = 40;
    fn body_len(&self) -> usize {
        match (self.version, self.uptime) {
            (None, None) => 0,
            (Some(_), None) => 4,
            (_, Some(_)) => 8,
        }
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        match (self.version, self.uptime) {
            (None, None) => {}
            (Some(version), None) => out.put_u32(version),
            (version, Some(uptime)) => {
                out.put_u32(version.unwrap_or(0));
                out.put_u32(uptime);
            }
        }
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let version = optional_u32(&mut r)?;
        let uptime = optional_u32(&mut r)?;
        Ok(ReqKeepalive { version, uptime })
    }
}

impl BodyWire for ReqTunnel {
    const OPERATION: Operation = Operation::ReqTunnel;
    const C_STRUCT_LEN: usize = 56;
    fn body_len(&self) -> usize {
        16 + self.data.len()
    }
    fn push_body(&self, out: &mut Vec<u8>) {
        out.put_u64(self.tunnel_id);
        out.put_u32(self.flags);
        out.put_datan(&self.data);
    }
    fn pull_body(body: &[u8]) -> Result<Self, PullError> {
        let mut r = Reader::new(body);
        let tunnel_id = r.u64()?;
        let flags = r.u32()?;
        let datalen = r.u32()?;
        let data = take(&mut r, datalen, "REQ_TUNNEL datalen")?.to_vec();
        Ok(ReqTunnel {
            tunnel_id,
            flags,
            data,
        })
    }
}

/// Applies `$f` to the typed body inside `$body`, or evaluates `$unknown` for unknown ones.
macro_rules! with_body {
    ($body:expr, $b:ident => $f:expr, $op:ident, $bytes:ident => $unknown:expr) => {
        match $body {
            Body::ReqCall($b) => $f,
            Body::ReplyCall($b) => $f,
            Body::ReqDmaster($b) => $f,
            Body::ReplyDmaster($b) => $f,
            Body::ReplyError($b) => $f,
            Body::ReqMessage($b) => $f,
            Body::ReqControl($b) => $f,
            Body::ReplyControl($b) => $f,
            Body::ReqKeepalive($b) => $f,
            Body::ReqTunnel($b) => $f,
            Body::Unknown {
                operation: $op,
                bytes: $bytes,
            } => $unknown,
        }
    };
}

fn operation_of<T: BodyWire>(_: &T) -> Operation {
    T::OPERATION
}

fn c_struct_len_of<T: BodyWire>(_: &T) -> usize {
    T::C_STRUCT_LEN
}

impl Body {
    /// The operation this body travels under.
    pub fn operation(&self) -> Operation {
        with_body!(self, b => operation_of(b), op, _bytes => Operation::from(*op))
    }

    /// `sizeof` of the old C struct for this operation (the header alone for unknown ones).
    pub fn c_struct_len(&self) -> usize {
        with_body!(self, b => c_struct_len_of(b), _op, _bytes => HEADER_LEN)
    }

    /// Bytes after the header, without any padding.
    pub fn wire_len(&self) -> usize {
        with_body!(self, b => b.body_len(), _op, bytes => bytes.len())
    }

    /// Appends the body, without any padding.
    pub fn push(&self, out: &mut Vec<u8>) {
        with_body!(self, b => b.push_body(out), _op, bytes => out.put_bytes(bytes))
    }

    /// Decodes the body of `operation` from `body`, the bytes between the header and
    /// `hdr.length`. Bytes after the content are padding and are ignored.
    pub fn pull(operation: Operation, body: &[u8]) -> Result<Body, PullError> {
        Ok(match operation {
            Operation::ReqCall => Body::ReqCall(ReqCall::pull_body(body)?),
            Operation::ReplyCall => Body::ReplyCall(ReplyCall::pull_body(body)?),
            Operation::ReqDmaster => Body::ReqDmaster(ReqDmaster::pull_body(body)?),
            Operation::ReplyDmaster => Body::ReplyDmaster(ReplyDmaster::pull_body(body)?),
            Operation::ReplyError => Body::ReplyError(ReplyError::pull_body(body)?),
            Operation::ReqMessage => Body::ReqMessage(ReqMessage::pull_body(body)?),
            Operation::ReqControl => Body::ReqControl(ReqControl::pull_body(body)?),
            Operation::ReplyControl => Body::ReplyControl(ReplyControl::pull_body(body)?),
            Operation::ReqKeepalive => Body::ReqKeepalive(ReqKeepalive::pull_body(body)?),
            Operation::ReqTunnel => Body::ReqTunnel(ReqTunnel::pull_body(body)?),
            Operation::Unknown(operation) => Body::Unknown {
                operation,
                bytes: body.to_vec(),
            },
        })
    }
}

impl ReplyControl {
    /// The error text, whichever form it came in: up to the first NUL, `None` when empty.
    pub fn error_message(&self) -> Option<String> {
        error_text(&self.errmsg)
    }
}

impl ReplyError {
    /// The message text up to the first NUL, `None` when empty.
    pub fn message(&self) -> Option<String> {
        error_text(&self.msg)
    }
}

fn error_text(raw: &[u8]) -> Option<String> {
    let text = raw.split(|&b| b == 0).next().unwrap_or_default();
    if text.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

impl Packet {
    /// Decodes one whole frame. `frame` holds at least `hdr.length` bytes (more is ignored);
    /// magic, version and `hdr.length >= 32` are checked, and every inner length must fit
    /// within `hdr.length`. Packets shorter than the old C struct (smbd's unpadded ones) are
    /// accepted as long as their content fits.
    /// A control as a client sends it to its daemon: the daemon fills in the source node,
    /// the generation and `client_id` itself.
    pub fn client_control(
        destnode: u32,
        reqid: u32,
        opcode: ControlOpcode,
        srvid: u64,
        flags: u32,
        data: Vec<u8>,
    ) -> Packet {
        Packet {
            generation: 0,
            destnode,
            srcnode: 0,
            reqid,
            body: Body::ReqControl(ReqControl {
                opcode,
                srvid,
                client_id: 0,
                flags,
                data,
            }),
        }
    }

    /// A message as a client sends it to its daemon.
    pub fn client_message(destnode: u32, srvid: u64, data: Vec<u8>) -> Packet {
        Packet {
            generation: 0,
            destnode,
            srcnode: 0,
            reqid: 0,
            body: Body::ReqMessage(ReqMessage { srvid, data }),
        }
    }

    pub fn pull(frame: &[u8]) -> Result<Packet, PullError> {
        Self::pull_with_header(frame).map(|(_, packet)| packet)
    }

    /// Like [`Packet::pull`], also returning the header as received.
    pub fn pull_with_header(frame: &[u8]) -> Result<(ReqHeader, Packet), PullError> {
        let (header, _) = ReqHeader::pull(frame)?;
        header.verify()?;
        let length = header.length as usize;
        let Some(body) = frame.get(HEADER_LEN..length) else {
            return Err(PullError::BadLength {
                what: "packet length beyond frame",
                value: length,
            });
        };
        let body = Body::pull(header.operation, body)?;
        let packet = Packet {
            generation: header.generation,
            destnode: header.destnode,
            srcnode: header.srcnode,
            reqid: header.reqid,
            body,
        };
        Ok((header, packet))
    }

    pub fn operation(&self) -> Operation {
        self.body.operation()
    }

    /// Header plus body, without padding.
    pub fn exact_len(&self) -> usize {
        HEADER_LEN + self.body.wire_len()
    }

    /// The length [`Packet::encode`] produces, which is also what goes into `hdr.length`.
    pub fn encoded_len(&self, padding: Padding) -> usize {
        padding.padded_len(self.exact_len(), self.body.c_struct_len())
    }

    /// The header [`Packet::encode`] writes.
    pub fn header(&self, padding: Padding) -> ReqHeader {
        let length = self.encoded_len(padding);
        assert!(
            u32::try_from(length).is_ok(),
            "packet length {length} does not fit in u32"
        );
        ReqHeader {
            length: length as u32,
            magic: CTDB_MAGIC,
            version: CTDB_PROTOCOL,
            generation: self.generation,
            operation: self.operation(),
            destnode: self.destnode,
            srcnode: self.srcnode,
            reqid: self.reqid,
        }
    }

    /// Appends the packet with `padding` zero bytes of padding.
    pub fn encode_into(&self, padding: Padding, out: &mut Vec<u8>) {
        let header = self.header(padding);
        let start = out.len();
        header.push(out);
        self.body.push(out);
        let written = out.len() - start;
        out.put_zeros(header.length as usize - written);
    }

    /// The packet as a fresh frame with `padding`.
    pub fn encode(&self, padding: Padding) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len(padding));
        self.encode_into(padding, &mut out);
        out
    }
}

/// A REQ_MESSAGE frame read in place: its header, srvid, and where its payload lies in the
/// frame. Lets a large message (a DB_PULL or push buffer) be used or passed on without
/// decoding it into a [`Packet`], which would copy the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub header: ReqHeader,
    pub srvid: u64,
    pub data: std::ops::Range<usize>,
}

impl MessageView {
    /// `None` unless `frame` is a well-formed REQ_MESSAGE (the checks of [`Packet::pull`]).
    pub fn parse(frame: &[u8]) -> Option<MessageView> {
        let (header, _) = ReqHeader::pull(frame).ok()?;
        if header.operation != Operation::ReqMessage || header.verify().is_err() {
            return None;
        }
        let body = frame.get(HEADER_LEN..header.length as usize)?;
        let srvid = u64::from_ne_bytes(body.get(..8)?.try_into().ok()?);
        let datalen = u32::from_ne_bytes(body.get(8..12)?.try_into().ok()?) as usize;
        let start = HEADER_LEN + 12;
        let end = start.checked_add(datalen)?;
        frame.get(start..end)?;
        if end > header.length as usize {
            return None;
        }
        Some(MessageView {
            header,
            srvid,
            data: start..end,
        })
    }
}

/// The frame [`Packet::encode`] makes of a REQ_MESSAGE with `header`'s generation, nodes and
/// reqid, written straight from a borrowed payload (one copy instead of two).
pub fn encode_message(header: &ReqHeader, srvid: u64, data: &[u8], padding: Padding) -> Vec<u8> {
    MessageBuffer::from_payload(data).into_frame(header, srvid, padding)
}

/// A REQ_MESSAGE payload written after room for the header, srvid and length, which
/// [`MessageBuffer::into_frame`] fills in: the payload (a DB_PULL buffer of up to
/// `RecBufferSizeLimit` bytes) becomes a frame without being copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBuffer {
    buf: Vec<u8>,
}

impl MessageBuffer {
    /// Header, srvid and datalen.
    const PREFIX: usize = HEADER_LEN + 12;

    /// An empty payload with room for `capacity` bytes (and the padding after them).
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(
            Self::PREFIX
                .saturating_add(capacity)
                .saturating_add(PACKET_ALIGNMENT),
        );
        buf.resize(Self::PREFIX, 0);
        MessageBuffer { buf }
    }

    /// A buffer holding `payload`.
    pub fn from_payload(payload: &[u8]) -> Self {
        let mut buffer = Self::with_capacity(payload.len());
        buffer.extend_from_slice(payload);
        buffer
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf[Self::PREFIX..]
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[Self::PREFIX..]
    }

    pub fn payload_len(&self) -> usize {
        self.buf.len() - Self::PREFIX
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// The frame [`encode_message`] makes of the payload, built in this buffer.
    pub fn into_frame(mut self, header: &ReqHeader, srvid: u64, padding: Padding) -> Vec<u8> {
        let datalen = self.payload_len();
        let length = padding.padded_len(self.buf.len(), ReqMessage::C_STRUCT_LEN);
        assert!(
            u32::try_from(length).is_ok() && u32::try_from(datalen).is_ok(),
            "message length {length} does not fit in u32"
        );
        let mut prefix = Vec::with_capacity(Self::PREFIX);
        ReqHeader {
            length: length as u32,
            magic: CTDB_MAGIC,
            version: CTDB_PROTOCOL,
            operation: Operation::ReqMessage,
            ..*header
        }
        .push(&mut prefix);
        prefix.extend_from_slice(&srvid.to_ne_bytes());
        prefix.extend_from_slice(&(datalen as u32).to_ne_bytes());
        self.buf[..Self::PREFIX].copy_from_slice(&prefix);
        self.buf.resize(length, 0);
        self.buf
    }
}

/// The length word at the front of a frame, once four bytes are there.
pub fn frame_length(prefix: &[u8]) -> Option<u32> {
    let word: [u8; 4] = prefix.get(..4)?.try_into().ok()?;
    Some(u32::from_ne_bytes(word))
}

/// Why a stream cannot yield the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length word of 0, which stock treats as fatal for the connection.
    ZeroLength,
    /// A frame shorter than a header. It has been consumed: a unix-socket peer may carry on
    /// (stock drops the packet), a node connection should be closed (stock marks it dead).
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

impl std::error::Error for FrameError {}

/// Frames at least this long are read straight into a buffer of their own and handed out
/// without a copy ([`FrameReader::read_space`]); a DB_PULL or push message is up to
/// `RecBufferSizeLimit` (1 MB) long.
pub const LARGE_FRAME_BYTES: usize = 64 * 1024;

/// Cuts a byte stream into length-prefixed frames (`common/ctdb_io.c:queue_process`), with
/// no I/O of its own. Bytes go in with [`FrameReader::feed`] (or are read by the caller into
/// [`FrameReader::read_space`]), whole frames come out of [`FrameReader::next_frame`]. A zero
/// or oversized length poisons the reader: every later call returns the same error, since the
/// stream position is lost.
#[derive(Debug, Clone)]
pub struct FrameReader {
    /// `buf[start..end]` is received and not yet returned; `buf[end..]` is zeroed room for
    /// the next read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: u32,
    fatal: Option<FrameError>,
}

impl FrameReader {
    /// A reader that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame,
            fatal: None,
        }
    }

    /// Appends bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.restart_if_drained();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Room for the caller's next read; report what it read with [`FrameReader::commit`].
    /// Normally `chunk` bytes, but when the bytes so far start a frame of at least
    /// [`LARGE_FRAME_BYTES`], exactly the rest of that frame, moved to the front first: the
    /// buffer then holds that one frame and [`FrameReader::next_frame`] hands it over whole.
    pub fn read_space(&mut self, chunk: usize) -> &mut [u8] {
        self.restart_if_drained();
        let pending = self.end - self.start;
        let large_rest = frame_length(&self.buf[self.start..self.end])
            .map(|length| length as usize)
            .filter(|&length| {
                length >= LARGE_FRAME_BYTES && length <= self.max_frame as usize && length > pending
            })
            .map(|length| length - pending);
        let want = match large_rest {
            Some(rest) => {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.start = 0;
                    self.end = pending;
                }
                rest
            }
            None => chunk.max(1),
        };
        let needed = self.end.saturating_add(want);
        if self.buf.len() < needed {
            self.buf.resize(needed, 0);
        }
        &mut self.buf[self.end..needed]
    }

    /// `n` bytes were read into the slice [`FrameReader::read_space`] returned.
    pub fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next complete frame (exactly `length` bytes, length word included), `Ok(None)` when
    /// more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(error) = self.fatal {
            return Err(error);
        }
        let pending = &self.buf[self.start..self.end];
        let Some(length) = frame_length(pending) else {
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
        let length_bytes = length as usize;
        if pending.len() < length_bytes {
            return Ok(None);
        }
        let frame =
            if self.start == 0 && self.end == length_bytes && length_bytes >= LARGE_FRAME_BYTES {
                // The buffer is this frame and nothing else: hand it over instead of copying.
                let mut frame = std::mem::take(&mut self.buf);
                frame.truncate(length_bytes);
                self.end = 0;
                frame
            } else {
                let frame = pending[..length_bytes].to_vec();
                self.consume(length_bytes);
                frame
            };
        if length_bytes < HEADER_LEN {
            return Err(FrameError::TooShort { length });
        }
        Ok(Some(frame))
    }

    fn restart_if_drained(&mut self) {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        // Compact once the consumed prefix dominates, so the buffer does not creep forward.
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 4096 && self.start > self.end / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::{BROADCAST_CONNECTED, CURRENT_NODE};
    use crate::testing::{seeds, Prng};

    const ALL_PADDINGS: [Padding; 3] = [Padding::Exact, Padding::Align8, Padding::Daemon];
    const KINDS: u64 = 11;

    /// A random body of kind `kind` (0..KINDS). Fields that padding would make ambiguous
    /// (optional tails, unknown bodies) are only generated in forms that survive `padding`.
    fn random_body(prng: &mut Prng, kind: u64, padding: Padding) -> Body {
        let small = |prng: &mut Prng| prng.bytes(40);
        match kind {
            0 => Body::ReqCall(ReqCall {
                flags: prng.u32(),
                db_id: prng.u32(),
                callid: prng.u32(),
                hopcount: prng.u32(),
                key: small(prng),
                calldata: small(prng),
            }),
            1 => Body::ReplyCall(ReplyCall {
                status: prng.i32(),
                data: small(prng),
            }),
            2 => Body::ReqDmaster(ReqDmaster {
                db_id: prng.u32(),
                rsn: prng.next_u64(),
                dmaster: prng.u32(),
                key: small(prng),
                data: small(prng),
                record_flags: if padding == Padding::Exact && prng.bool() {
                    None
                } else {
                    Some(prng.u32())
                },
            }),
            3 => Body::ReplyDmaster(ReplyDmaster {
                db_id: prng.u32(),
                rsn: prng.next_u64(),
                key: small(prng),
                data: small(prng),
                record_flags: if padding == Padding::Exact && prng.bool() {
                    None
                } else {
                    Some(prng.u32())
                },
            }),
            4 => Body::ReplyError(ReplyError {
                status: prng.i32(),
                msg: small(prng),
            }),
            5 => Body::ReqMessage(ReqMessage {
                srvid: prng.next_u64(),
                data: small(prng),
            }),
            6 => Body::ReqControl(ReqControl {
                opcode: ControlOpcode::from(prng.u32() % 200),
                srvid: prng.next_u64(),
                client_id: prng.u32(),
                flags: prng.u32(),
                data: small(prng),
            }),
            7 => Body::ReplyControl(ReplyControl {
                status: prng.i32(),
                data: small(prng),
                errmsg: small(prng),
            }),
            8 => Body::ReqKeepalive(match (padding, prng.below(3)) {
                (Padding::Exact, 0) => ReqKeepalive::default(),
                (Padding::Exact, 1) => ReqKeepalive {
                    version: Some(prng.u32()),
                    uptime: None,
                },
                (Padding::Align8, 0) => ReqKeepalive::default(),
                _ => ReqKeepalive {
                    version: Some(prng.u32()),
                    uptime: Some(prng.u32()),
                },
            }),
            9 => Body::ReqTunnel(ReqTunnel {
                tunnel_id: prng.next_u64(),
                flags: prng.u32(),
                data: small(prng),
            }),
            _ => {
                let operation = loop {
                    let op = prng.u32() % 64;
                    if matches!(Operation::from(op), Operation::Unknown(_)) {
                        break op;
                    }
                };
                let mut bytes = small(prng);
                if padding != Padding::Exact {
                    bytes.truncate(bytes.len() / 8 * 8);
                }
                Body::Unknown { operation, bytes }
            }
        }
    }

    fn random_packet(prng: &mut Prng, kind: u64, padding: Padding) -> Packet {
        Packet {
            generation: prng.u32(),
            destnode: prng.u32(),
            srcnode: prng.u32(),
            reqid: prng.u32(),
            body: random_body(prng, kind, padding),
        }
    }

    #[test]
    fn every_body_round_trips_under_every_padding() {
        for seed in seeds(300) {
            for padding in ALL_PADDINGS {
                for kind in 0..KINDS {
                    let mut prng = Prng::new(seed.wrapping_mul(KINDS) + kind);
                    let packet = random_packet(&mut prng, kind, padding);
                    let ctx = format!("seed {seed} kind {kind} {padding:?}: {packet:?}");
                    let frame = packet.encode(padding);
                    assert_eq!(frame.len(), packet.encoded_len(padding), "{ctx}");
                    assert_eq!(frame_length(&frame), Some(frame.len() as u32), "{ctx}");
                    assert!(frame.len() >= packet.exact_len(), "{ctx}");
                    assert!(frame[packet.exact_len()..].iter().all(|&b| b == 0), "{ctx}");
                    match padding {
                        Padding::Exact => assert_eq!(frame.len(), packet.exact_len(), "{ctx}"),
                        Padding::Align8 => {
                            assert_eq!(frame.len() % 8, 0, "{ctx}");
                            assert!(frame.len() < packet.exact_len() + 8, "{ctx}");
                        }
                        Padding::Daemon => {
                            assert_eq!(frame.len() % 8, 0, "{ctx}");
                            assert!(frame.len() >= packet.body.c_struct_len(), "{ctx}");
                        }
                    }
                    let (header, back) = Packet::pull_with_header(&frame).unwrap();
                    assert_eq!(back, packet, "{ctx}");
                    assert_eq!(header, packet.header(padding), "{ctx}");

                    // Extra bytes after the frame (the next packet in a buffer) do not matter.
                    let mut longer = frame.clone();
                    longer.extend_from_slice(&[0xa5; 9]);
                    assert_eq!(Packet::pull(&longer).unwrap(), packet, "{ctx}");

                    // The encoder appends and zero-fills regardless of what precedes it.
                    let mut appended = vec![0xa5; 3];
                    packet.encode_into(padding, &mut appended);
                    assert_eq!(&appended[3..], &frame[..], "{ctx}");
                }
            }
        }
    }

    #[test]
    fn every_strict_prefix_is_rejected() {
        for seed in seeds(60) {
            for padding in ALL_PADDINGS {
                for kind in 0..KINDS {
                    let mut prng = Prng::new(seed.wrapping_mul(KINDS) + kind);
                    let frame = random_packet(&mut prng, kind, padding).encode(padding);
                    for cut in 0..frame.len() {
                        assert!(
                            Packet::pull(&frame[..cut]).is_err(),
                            "seed {seed} kind {kind} {padding:?} cut {cut}"
                        );
                    }
                }
            }
        }
    }

    fn set_u32(frame: &mut [u8], offset: usize, value: u32) {
        frame[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn get_u32(frame: &[u8], offset: usize) -> u32 {
        u32::from_ne_bytes(frame[offset..offset + 4].try_into().unwrap())
    }

    #[test]
    fn header_length_beyond_frame_is_rejected() {
        for seed in seeds(60) {
            for kind in 0..KINDS {
                let mut prng = Prng::new(seed.wrapping_mul(KINDS) + kind);
                let mut frame =
                    random_packet(&mut prng, kind, Padding::Align8).encode(Padding::Align8);
                let len = frame.len() as u32;
                for lie in [len + 1, len + 8, len.saturating_mul(2), u32::MAX] {
                    set_u32(&mut frame, 0, lie);
                    assert!(
                        matches!(Packet::pull(&frame), Err(PullError::BadLength { .. })),
                        "seed {seed} kind {kind} length {lie}"
                    );
                }
                for lie in [0, 1, 31] {
                    set_u32(&mut frame, 0, lie);
                    assert!(
                        Packet::pull(&frame).is_err(),
                        "seed {seed} kind {kind} length {lie}"
                    );
                }
            }
        }
    }

    #[test]
    fn header_length_shorter_than_content_is_rejected() {
        for seed in seeds(60) {
            for kind in 0..KINDS {
                let mut prng = Prng::new(seed.wrapping_mul(KINDS) + kind);
                let packet = random_packet(&mut prng, kind, Padding::Exact);
                let frame = packet.encode(Padding::Exact);
                // Bodies whose tail only hdr.length delimits legitimately decode shorter.
                let optional_tail = match &packet.body {
                    Body::ReqDmaster(ReqDmaster {
                        record_flags: Some(_),
                        ..
                    })
                    | Body::ReplyDmaster(ReplyDmaster {
                        record_flags: Some(_),
                        ..
                    }) => 4,
                    Body::ReqKeepalive(_) | Body::Unknown { .. } => frame.len() - HEADER_LEN,
                    _ => 0,
                };
                for length in HEADER_LEN..frame.len() {
                    let mut lying = frame.clone();
                    set_u32(&mut lying, 0, length as u32);
                    let result = Packet::pull(&lying);
                    if length + optional_tail >= frame.len() {
                        assert!(result.is_ok(), "seed {seed} kind {kind} length {length}");
                    } else {
                        assert!(result.is_err(), "seed {seed} kind {kind} length {length}");
                    }
                }
            }
        }
    }

    /// Offsets of the inner length words of each kind, in packet coordinates.
    fn inner_length_offsets(kind: u64) -> &'static [usize] {
        match kind {
            0 => &[48, 52],
            1 | 4 => &[36],
            2 => &[52, 56],
            3 => &[48, 52],
            5 => &[40],
            6 => &[56],
            7 => &[36, 40],
            9 => &[44],
            _ => &[],
        }
    }

    #[test]
    fn inner_lengths_past_the_packet_are_rejected() {
        for seed in seeds(100) {
            for kind in 0..KINDS {
                let mut prng = Prng::new(seed.wrapping_mul(KINDS) + kind);
                let mut packet = random_packet(&mut prng, kind, Padding::Exact);
                // Without the optional flags word there is no slack after the content.
                match &mut packet.body {
                    Body::ReqDmaster(b) => b.record_flags = None,
                    Body::ReplyDmaster(b) => b.record_flags = None,
                    _ => {}
                }
                let frame = packet.encode(Padding::Exact);
                for &offset in inner_length_offsets(kind) {
                    let original = get_u32(&frame, offset);
                    for value in [original + 1, original + 8, original + (1 << 20), u32::MAX] {
                        let mut lying = frame.clone();
                        set_u32(&mut lying, offset, value);
                        assert!(
                            matches!(Packet::pull(&lying), Err(PullError::BadLength { .. })),
                            "seed {seed} kind {kind} offset {offset} value {value}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        for seed in seeds(3000) {
            let mut prng = Prng::new(seed);
            let mut frame = prng.bytes(200);
            // Make most inputs get past the header checks so the body parsers are exercised.
            if frame.len() >= HEADER_LEN && prng.below(4) != 0 {
                let length = if prng.bool() {
                    frame.len() as u32
                } else {
                    prng.u32() % (frame.len() as u32 + 16)
                };
                set_u32(&mut frame, 0, length);
                set_u32(&mut frame, 4, CTDB_MAGIC);
                set_u32(&mut frame, 8, CTDB_PROTOCOL);
                set_u32(&mut frame, 16, prng.u32() % 12);
                if prng.bool() {
                    for offset in (32..frame.len().saturating_sub(4)).step_by(4) {
                        if prng.below(3) == 0 {
                            let small = prng.u32() % 64;
                            set_u32(&mut frame, offset, small);
                        }
                    }
                }
            }
            if let Ok(packet) = Packet::pull(&frame) {
                // Whatever decodes re-encodes into something that decodes the same way.
                let again = packet.encode(Padding::Exact);
                assert_eq!(Packet::pull(&again).unwrap(), packet, "seed {seed}");
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic() {
        for seed in seeds(500) {
            let mut prng = Prng::new(seed);
            let kind = prng.below(KINDS);
            let padding = ALL_PADDINGS[prng.below(3) as usize];
            let mut frame = random_packet(&mut prng, kind, padding).encode(padding);
            for _ in 0..1 + prng.below(4) {
                let at = prng.below(frame.len() as u64) as usize;
                frame[at] = prng.u8();
            }
            let _ = Packet::pull(&frame);
        }
    }

    fn hex_words(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .flat_map(|word| {
                (0..word.len())
                    .step_by(2)
                    .map(move |i| u8::from_str_radix(&word[i..i + 2], 16).unwrap())
            })
            .collect()
    }

    /// Digest Appendix C: GET_PNN request from the client library, and smbd's unpadded form.
    #[test]
    fn golden_get_pnn_request() {
        let golden = hex_words(
            "40000000 42445443 01000000 00000000 07000000 010000f0 00000000 65000000
             23000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000",
        );
        let expected = Packet {
            generation: 0,
            destnode: CURRENT_NODE,
            srcnode: 0,
            reqid: 0x65,
            body: Body::ReqControl(ReqControl {
                opcode: ControlOpcode::GetPnn,
                srvid: 0,
                client_id: 0,
                flags: 0,
                data: Vec::new(),
            }),
        };
        assert_eq!(Packet::pull(&golden).unwrap(), expected);
        assert_eq!(expected.encode(Padding::Align8), golden);
        assert_eq!(expected.encode(Padding::Daemon), golden);

        let mut smbd = golden[..60].to_vec();
        smbd[0] = 60;
        assert_eq!(Packet::pull(&smbd).unwrap(), expected);
        assert_eq!(expected.encode(Padding::Exact), smbd);
    }

    #[test]
    fn golden_get_pnn_reply() {
        let golden = hex_words(
            "30000000 42445443 01000000 c0f41152 08000000 00000000 00000000 65000000
             00000000 00000000 00000000 00000000",
        );
        let expected = Packet {
            generation: 0x5211_f4c0,
            destnode: 0,
            srcnode: 0,
            reqid: 0x65,
            body: Body::ReplyControl(ReplyControl::default()),
        };
        assert_eq!(Packet::pull(&golden).unwrap(), expected);
        assert_eq!(expected.encode(Padding::Daemon), golden);
        assert_eq!(expected.encode(Padding::Align8), golden);
        assert_eq!(expected.exact_len(), 44);
    }

    #[test]
    fn golden_leader_broadcast() {
        let golden = hex_words(
            "30000000 42445443 01000000 c0f41152 05000000 00000000 01000000 00000000
             00000000 000001f1 04000000 01000000",
        );
        let expected = Packet {
            generation: 0x5211_f4c0,
            destnode: 0,
            srcnode: 1,
            reqid: 0,
            body: Body::ReqMessage(ReqMessage {
                srvid: 0xF101_0000_0000_0000,
                data: 1u32.to_ne_bytes().to_vec(),
            }),
        };
        assert_eq!(Packet::pull(&golden).unwrap(), expected);
        for padding in ALL_PADDINGS {
            assert_eq!(expected.encode(padding), golden, "{padding:?}");
        }
    }

    #[test]
    fn golden_keepalive() {
        let golden = hex_words(
            "28000000 42445443 01000000 c0f41152 09000000 01000000 00000000 00000000
             11000400 2a000000",
        );
        let expected = Packet {
            generation: 0x5211_f4c0,
            destnode: 1,
            srcnode: 0,
            reqid: 0,
            body: Body::ReqKeepalive(ReqKeepalive {
                version: Some(KEEPALIVE_VERSION),
                uptime: Some(42),
            }),
        };
        assert_eq!(Packet::pull(&golden).unwrap(), expected);
        for padding in ALL_PADDINGS {
            assert_eq!(expected.encode(padding), golden, "{padding:?}");
        }
        // A keepalive from before version checks is a bare header.
        let mut old = golden[..32].to_vec();
        old[0] = 32;
        let decoded = Packet::pull(&old).unwrap();
        assert_eq!(decoded.body, Body::ReqKeepalive(ReqKeepalive::default()));
    }

    #[test]
    fn c_struct_sizes_drive_daemon_padding() {
        let sizes = [
            (Body::ReqCall(ReqCall::default()), 56, 64),
            (Body::ReplyCall(ReplyCall::default()), 40, 48),
            (Body::ReqDmaster(ReqDmaster::default()), 60, 64),
            (Body::ReplyDmaster(ReplyDmaster::default()), 56, 64),
            (Body::ReplyError(ReplyError::default()), 40, 48),
            (Body::ReqMessage(ReqMessage::default()), 44, 48),
            (
                Body::ReqControl(ReqControl {
                    opcode: ControlOpcode::Ping,
                    srvid: 0,
                    client_id: 0,
                    flags: 0,
                    data: Vec::new(),
                }),
                60,
                64,
            ),
            (Body::ReplyControl(ReplyControl::default()), 44, 48),
            (
                Body::ReqKeepalive(ReqKeepalive {
                    version: Some(1),
                    uptime: Some(2),
                }),
                40,
                40,
            ),
            (Body::ReqTunnel(ReqTunnel::default()), 48, 56),
        ];
        for (body, exact, daemon) in sizes {
            let packet = Packet {
                generation: 1,
                destnode: BROADCAST_CONNECTED,
                srcnode: 0,
                reqid: 0,
                body,
            };
            assert_eq!(packet.exact_len(), exact, "{packet:?}");
            assert_eq!(packet.encoded_len(Padding::Daemon), daemon, "{packet:?}");
            assert_eq!(packet.encoded_len(Padding::Exact), exact, "{packet:?}");
        }
        // One key byte: the daemon pads REQ_CALL 57 to 64, the library too.
        let call = Packet {
            generation: 1,
            destnode: 0,
            srcnode: 0,
            reqid: 0,
            body: Body::ReqCall(ReqCall {
                key: vec![7],
                ..ReqCall::default()
            }),
        };
        assert_eq!(call.encoded_len(Padding::Align8), 64);
        assert_eq!(call.encoded_len(Padding::Daemon), 64);
        assert_eq!(call.encoded_len(Padding::Exact), 57);
    }

    #[test]
    fn dmaster_padding_reads_back_as_zero_flags() {
        // Stock reads the flags word whenever hdr.length leaves room, padding included.
        let packet = Packet {
            generation: 1,
            destnode: 0,
            srcnode: 1,
            reqid: 0,
            body: Body::ReqDmaster(ReqDmaster {
                record_flags: None,
                ..ReqDmaster::default()
            }),
        };
        let frame = packet.encode(Padding::Daemon);
        assert_eq!(frame.len(), 64);
        match Packet::pull(&frame).unwrap().body {
            Body::ReqDmaster(b) => assert_eq!(b.record_flags, Some(0)),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn reply_control_error_forms() {
        let daemon = ReplyControl {
            status: -1,
            data: vec![1, 2, 3, 4],
            errmsg: b"Failed to freeze".to_vec(),
        };
        let library = ReplyControl {
            status: -1,
            data: Vec::new(),
            errmsg: b"Failed to freeze\0".to_vec(),
        };
        assert_eq!(daemon.error_message().as_deref(), Some("Failed to freeze"));
        assert_eq!(library.error_message().as_deref(), Some("Failed to freeze"));
        assert_eq!(ReplyControl::default().error_message(), None);
        for body in [daemon, library] {
            let packet = Packet {
                generation: 2,
                destnode: 0,
                srcnode: 0,
                reqid: 9,
                body: Body::ReplyControl(body),
            };
            let frame = packet.encode(Padding::Daemon);
            assert_eq!(Packet::pull(&frame).unwrap(), packet);
        }
    }

    fn chunks_of(prng: &mut Prng, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = (1 + prng.below(70) as usize).min(rest.len());
            chunks.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        chunks
    }

    #[test]
    fn frame_reader_reassembles_any_chunking() {
        for seed in seeds(200) {
            let mut prng = Prng::new(seed);
            let packets: Vec<Packet> = (0..1 + prng.below(6))
                .map(|_| {
                    let kind = prng.below(KINDS);
                    random_packet(&mut prng, kind, Padding::Exact)
                })
                .collect();
            let stream: Vec<u8> = packets
                .iter()
                .flat_map(|p| p.encode(Padding::Exact))
                .collect();
            let mut reader = FrameReader::new(1 << 20);
            let mut decoded = Vec::new();
            for chunk in chunks_of(&mut prng, &stream) {
                reader.feed(&chunk);
                while let Some(frame) = reader.next_frame().unwrap() {
                    decoded.push(Packet::pull(&frame).unwrap());
                }
            }
            assert_eq!(decoded, packets, "seed {seed}");
            assert_eq!(reader.buffered(), 0, "seed {seed}");
        }
    }

    /// A message packet whose payload is `len` bytes of `fill`.
    fn message_of(len: usize, fill: u8) -> Packet {
        Packet {
            generation: 1,
            destnode: 0,
            srcnode: 2,
            reqid: 0,
            body: Body::ReqMessage(ReqMessage {
                srvid: 7,
                data: vec![fill; len],
            }),
        }
    }

    #[test]
    fn frame_reader_reads_in_place_and_hands_large_frames_over_whole() {
        for seed in seeds(100) {
            let mut prng = Prng::new(seed);
            // Small and large frames mixed, so large ones start anywhere in the buffer.
            let packets: Vec<Packet> = (0..2 + prng.below(6))
                .map(|i| {
                    if prng.below(2) == 0 {
                        message_of(LARGE_FRAME_BYTES + prng.below(50_000) as usize, i as u8)
                    } else {
                        let kind = prng.below(KINDS);
                        random_packet(&mut prng, kind, Padding::Exact)
                    }
                })
                .collect();
            let stream: Vec<u8> = packets
                .iter()
                .flat_map(|p| p.encode(Padding::Exact))
                .collect();
            let mut reader = FrameReader::new(1 << 20);
            let mut rest = &stream[..];
            let mut decoded = Vec::new();
            while !rest.is_empty() {
                let chunk = 1 + prng.below(40_000) as usize;
                let space = reader.read_space(chunk);
                let n = space.len().min(rest.len()).min(chunk);
                space[..n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                reader.commit(n);
                while let Some(frame) = reader.next_frame().unwrap() {
                    decoded.push(Packet::pull(&frame).unwrap());
                }
            }
            assert_eq!(decoded, packets, "seed {seed}");
            assert_eq!(reader.buffered(), 0, "seed {seed}");
        }
    }

    #[test]
    fn a_large_frame_read_into_its_own_buffer_is_not_copied() {
        let frame = message_of(200_000, 9).encode(Padding::Exact);
        let mut reader = FrameReader::new(1 << 20);
        // A small frame first, so the large one starts in the middle of the buffer.
        let small = message_of(10, 1).encode(Padding::Exact);
        let mut stream = small.clone();
        stream.extend_from_slice(&frame[..100]);
        reader.read_space(4096)[..stream.len()].copy_from_slice(&stream);
        reader.commit(stream.len());
        assert_eq!(reader.next_frame().unwrap(), Some(small));
        assert_eq!(reader.next_frame().unwrap(), None);
        let space = reader.read_space(4096);
        assert_eq!(
            space.len(),
            frame.len() - 100,
            "exactly the rest of the frame"
        );
        space.copy_from_slice(&frame[100..]);
        let space_ptr = space.as_ptr();
        reader.commit(frame.len() - 100);
        let got = reader.next_frame().unwrap().unwrap();
        assert_eq!(got, frame);
        assert_eq!(
            got[100..].as_ptr(),
            space_ptr,
            "the frame is the read buffer itself"
        );
        assert_eq!(reader.buffered(), 0);
        assert_eq!(reader.next_frame().unwrap(), None);
    }

    #[test]
    fn messages_encoded_from_borrowed_data_or_in_place_match_the_packet_encoder() {
        for seed in seeds(100) {
            let mut prng = Prng::new(seed);
            let packet = Packet {
                generation: prng.u32(),
                destnode: prng.u32(),
                srcnode: prng.u32(),
                reqid: prng.u32(),
                body: Body::ReqMessage(ReqMessage {
                    srvid: prng.next_u64(),
                    data: prng.bytes(100),
                }),
            };
            let Body::ReqMessage(m) = &packet.body else {
                unreachable!()
            };
            for padding in ALL_PADDINGS {
                let header = packet.header(padding);
                let frame = encode_message(&header, m.srvid, &m.data, padding);
                assert_eq!(frame, packet.encode(padding), "seed {seed} {padding:?}");
                let built =
                    MessageBuffer::from_payload(&m.data).into_frame(&header, m.srvid, padding);
                assert_eq!(built, frame, "seed {seed} {padding:?}");
                let view = MessageView::parse(&frame).expect("a message");
                assert_eq!(view.header, header);
                assert_eq!(view.srvid, m.srvid);
                assert_eq!(&frame[view.data.clone()], &m.data[..]);
            }
        }
    }

    #[test]
    fn message_view_agrees_with_the_decoder_on_any_bytes() {
        for seed in seeds(300) {
            let mut prng = Prng::new(seed);
            let kind = prng.below(KINDS);
            let mut frame = random_packet(&mut prng, kind, Padding::Daemon).encode(Padding::Daemon);
            // Damage some frames: truncate, or overwrite a byte of the header or datalen.
            match prng.below(4) {
                0 => frame.truncate(prng.below(frame.len() as u64 + 1) as usize),
                1 => {
                    let at = prng.below(frame.len().min(HEADER_LEN + 12) as u64) as usize;
                    frame[at] = prng.u32() as u8;
                }
                _ => {}
            }
            let decoded = Packet::pull(&frame);
            match MessageView::parse(&frame) {
                Some(view) => {
                    let Ok(Packet {
                        body: Body::ReqMessage(m),
                        ..
                    }) = decoded
                    else {
                        panic!("seed {seed}: the view accepted what the decoder refused");
                    };
                    assert_eq!((view.srvid, &frame[view.data]), (m.srvid, &m.data[..]));
                }
                None => assert!(
                    !matches!(
                        decoded,
                        Ok(Packet {
                            body: Body::ReqMessage(_),
                            ..
                        })
                    ),
                    "seed {seed}: the view refused a message the decoder accepted"
                ),
            }
        }
    }

    #[test]
    fn frame_reader_errors() {
        assert_eq!(frame_length(&[1, 2, 3]), None);
        assert_eq!(frame_length(&[64, 0, 0, 0, 9]), Some(64));

        let mut reader = FrameReader::new(100);
        assert_eq!(reader.next_frame(), Ok(None));
        reader.feed(&[0, 0, 0, 0]);
        assert_eq!(reader.next_frame(), Err(FrameError::ZeroLength));
        reader.feed(&[40; 64]);
        assert_eq!(reader.next_frame(), Err(FrameError::ZeroLength));

        let mut reader = FrameReader::new(100);
        reader.feed(&101u32.to_ne_bytes());
        assert_eq!(
            reader.next_frame(),
            Err(FrameError::TooLong {
                length: 101,
                max: 100
            })
        );

        // A short frame is consumed once complete; what follows is still readable.
        let mut reader = FrameReader::new(100);
        let mut stream = 8u32.to_ne_bytes().to_vec();
        stream.extend_from_slice(&[0xee; 4]);
        let good = Packet {
            generation: 0,
            destnode: CURRENT_NODE,
            srcnode: 0,
            reqid: 1,
            body: Body::ReqKeepalive(ReqKeepalive::default()),
        }
        .encode(Padding::Exact);
        stream.extend_from_slice(&good);
        reader.feed(&stream[..6]);
        assert_eq!(reader.next_frame(), Ok(None));
        reader.feed(&stream[6..]);
        assert_eq!(reader.next_frame(), Err(FrameError::TooShort { length: 8 }));
        assert_eq!(reader.next_frame(), Ok(Some(good)));
        assert_eq!(reader.next_frame(), Ok(None));
    }

    #[test]
    fn frame_reader_compacts_long_streams() {
        let frame = Packet {
            generation: 0,
            destnode: 0,
            srcnode: 0,
            reqid: 0,
            body: Body::ReqMessage(ReqMessage {
                srvid: 1,
                data: vec![5; 100],
            }),
        }
        .encode(Padding::Align8);
        let mut reader = FrameReader::new(1024);
        for round in 0..50 {
            // Many whole frames plus a partial one, so consumed bytes pile up in front.
            for _ in 0..100 {
                reader.feed(&frame);
            }
            reader.feed(&frame[..10]);
            for _ in 0..100 {
                assert_eq!(
                    reader.next_frame(),
                    Ok(Some(frame.clone())),
                    "round {round}"
                );
            }
            assert_eq!(reader.next_frame(), Ok(None));
            assert_eq!(reader.buffered(), 10);
            reader.feed(&frame[10..]);
            assert_eq!(reader.next_frame(), Ok(Some(frame.clone())));
        }
        assert!(reader.buf.capacity() < 64 * 1024);
    }
}
