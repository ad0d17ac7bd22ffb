//! The ctdb-eventd protocol (mirrors `ctdb/event/event_protocol.c`, `event_protocol.h` and
//! `event_protocol_util.c`).
//!
//! ctdbd and the `ctdb-event` tool talk to ctdb-eventd over a unix stream socket. Every packet is
//! a 12-byte header (`length`, `version`, `reqid`, host order) followed by a command body built
//! from the same primitives as the main protocol: host-order integers, 16-byte `timeval`s and
//! `stringn` strings (u32 length counting the NUL, then the bytes; a NULL string is length 0).
//! The `length` field is the whole packet and doubles as the stream's framing prefix, which
//! [`complete_frame_len`] and [`FrameBuffer`] handle.
//!
//! Stock parsers are lenient in ways a careful peer never exercises (a `stringn` whose NUL sits
//! before its declared end is consumed only up to the NUL, and one without a NUL reads a byte
//! past its end). We reject such strings instead: every well-formed stock packet parses
//! identically, and malformed ones fail cleanly rather than desynchronise the stream.

use super::basic::{Marshal, PullError, Reader, Timeval, Writer};

/// `CTDB_EVENT_PROTOCOL_VERSION`. Stock writes 0 in practice (ctdbd, `ctdb-event` and eventd
/// all leave the field zeroed) and nobody checks it, so we keep whatever arrives.
pub const EVENT_PROTOCOL_VERSION: u32 = 1;

/// Size of [`EventHeader`] on the wire.
pub const EVENT_HEADER_LEN: usize = 12;

/// `CTDB_EVENT_RUN_ALL`: keep running the remaining scripts after one fails.
pub const EVENT_RUN_ALL: u32 = 1;

/// The largest packet [`complete_frame_len`] accepts. Stock has no limit short of `INT32_MAX`; a
/// STATUS reply carries every script's captured output, so the bound is generous, but it stops
/// a corrupt length from making a reader buffer gigabytes.
pub const MAX_EVENT_FRAME_LEN: usize = 64 * 1024 * 1024;

/// Smallest possible script entry in a STATUS reply: two NULL strings, two timevals, a result.
const MIN_SCRIPT_WIRE_LEN: usize = 4 + 16 + 16 + 4 + 4;

crate::enum_with_unknown! {
    /// `enum ctdb_event_command`. Stock parsers reject anything but RUN, STATUS and SCRIPT;
    /// the `Unknown` variant only exists so that a header peeker can name what it saw.
    pub enum EventCommand {
        Run = 1 => "RUN",
        Status = 2 => "STATUS",
        Script = 3 => "SCRIPT",
    }
}

impl EventCommand {
    fn pull(r: &mut Reader<'_>) -> Result<Self, PullError> {
        let value = r.u32()?;
        match EventCommand::from(value) {
            EventCommand::Unknown(_) => Err(PullError::BadValue {
                what: "event command",
                value: u64::from(value),
            }),
            known => Ok(known),
        }
    }
}

/// `enum ctdb_event_script_action`: what a SCRIPT request does to a script's execute bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScriptAction {
    Disable,
    Enable,
}

impl ScriptAction {
    pub fn to_u32(self) -> u32 {
        match self {
            ScriptAction::Disable => 0,
            ScriptAction::Enable => 1,
        }
    }

    fn pull(r: &mut Reader<'_>) -> Result<Self, PullError> {
        match r.u32()? {
            0 => Ok(ScriptAction::Disable),
            1 => Ok(ScriptAction::Enable),
            other => Err(PullError::BadValue {
                what: "script action",
                value: u64::from(other),
            }),
        }
    }
}

/// `struct ctdb_event_header`. `length` is the size of the whole packet, header included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventHeader {
    pub length: u32,
    pub version: u32,
    pub reqid: u32,
}

impl Marshal for EventHeader {
    fn wire_len(&self) -> usize {
        EVENT_HEADER_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.length);
        out.put_u32(self.version);
        out.put_u32(self.reqid);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let header = EventHeader {
            length: r.u32()?,
            version: r.u32()?,
            reqid: r.u32()?,
        };
        Ok((header, r.pos()))
    }
}

/// A `stringn` carrying a name (component, event, script, arguments). Invalid UTF-8 is replaced
/// rather than rejected, like the rest of the crate's string fields.
fn pull_name(r: &mut Reader<'_>) -> Result<Option<String>, PullError> {
    Ok(pull_raw_stringn(r)?.map(|bytes| String::from_utf8_lossy(bytes).into_owned()))
}

/// A `stringn` body without its NUL, or `None` for the NULL string.
fn pull_raw_stringn<'a>(r: &mut Reader<'a>) -> Result<Option<&'a [u8]>, PullError> {
    let len = r.len_u32("event stringn")?;
    if len == 0 {
        return Ok(None);
    }
    let bytes = r.bytes(len)?;
    match bytes.split_last() {
        Some((0, body)) if !body.contains(&0) => Ok(Some(body)),
        _ => Err(PullError::BadValue {
            what: "event stringn not ending at its only NUL",
            value: len as u64,
        }),
    }
}

fn push_raw_stringn(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        None => out.put_u32(0),
        Some(body) => {
            out.put_len(body.len() + 1);
            out.put_bytes(body);
            out.put_u8(0);
        }
    }
}

fn push_name(out: &mut Vec<u8>, s: Option<&str>) {
    push_raw_stringn(out, s.map(str::as_bytes));
}

fn stringn_wire_len(s: Option<&[u8]>) -> usize {
    4 + s.map_or(0, |body| body.len() + 1)
}

fn name_wire_len(s: Option<&str>) -> usize {
    stringn_wire_len(s.map(str::as_bytes))
}

/// `struct ctdb_event_request_run`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunRequest {
    pub component: Option<String>,
    pub event: Option<String>,
    /// The event's arguments joined by single spaces; `None` when there are none.
    pub args: Option<String>,
    /// Seconds allowed for the whole event.
    pub timeout: u32,
    /// [`EVENT_RUN_ALL`] or 0.
    pub flags: u32,
}

impl RunRequest {
    fn wire_len(&self) -> usize {
        name_wire_len(self.component.as_deref())
            + name_wire_len(self.event.as_deref())
            + name_wire_len(self.args.as_deref())
            + 8
    }
    fn push(&self, out: &mut Vec<u8>) {
        push_name(out, self.component.as_deref());
        push_name(out, self.event.as_deref());
        push_name(out, self.args.as_deref());
        out.put_u32(self.timeout);
        out.put_u32(self.flags);
    }
    fn pull(r: &mut Reader<'_>) -> Result<Self, PullError> {
        Ok(RunRequest {
            component: pull_name(r)?,
            event: pull_name(r)?,
            args: pull_name(r)?,
            timeout: r.u32()?,
            flags: r.u32()?,
        })
    }
}

/// `struct ctdb_event_request_status`: the last result of one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusRequest {
    pub component: Option<String>,
    pub event: Option<String>,
}

/// `struct ctdb_event_request_script`: enable or disable one script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRequest {
    pub component: Option<String>,
    pub script: Option<String>,
    pub action: ScriptAction,
}

/// `struct ctdb_event_request` without its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRequest {
    Run(RunRequest),
    Status(StatusRequest),
    Script(ScriptRequest),
}

impl EventRequest {
    pub fn command(&self) -> EventCommand {
        match self {
            EventRequest::Run(_) => EventCommand::Run,
            EventRequest::Status(_) => EventCommand::Status,
            EventRequest::Script(_) => EventCommand::Script,
        }
    }
}

impl Marshal for EventRequest {
    fn wire_len(&self) -> usize {
        4 + match self {
            EventRequest::Run(run) => run.wire_len(),
            EventRequest::Status(status) => {
                name_wire_len(status.component.as_deref()) + name_wire_len(status.event.as_deref())
            }
            EventRequest::Script(script) => {
                name_wire_len(script.component.as_deref())
                    + name_wire_len(script.script.as_deref())
                    + 4
            }
        }
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.command().into());
        match self {
            EventRequest::Run(run) => run.push(out),
            EventRequest::Status(status) => {
                push_name(out, status.component.as_deref());
                push_name(out, status.event.as_deref());
            }
            EventRequest::Script(script) => {
                push_name(out, script.component.as_deref());
                push_name(out, script.script.as_deref());
                out.put_u32(script.action.to_u32());
            }
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let request = match EventCommand::pull(&mut r)? {
            EventCommand::Run => EventRequest::Run(RunRequest::pull(&mut r)?),
            EventCommand::Status => EventRequest::Status(StatusRequest {
                component: pull_name(&mut r)?,
                event: pull_name(&mut r)?,
            }),
            EventCommand::Script => EventRequest::Script(ScriptRequest {
                component: pull_name(&mut r)?,
                script: pull_name(&mut r)?,
                action: ScriptAction::pull(&mut r)?,
            }),
            EventCommand::Unknown(value) => {
                return Err(PullError::BadValue {
                    what: "event command",
                    value: u64::from(value),
                })
            }
        };
        Ok((request, r.pos()))
    }
}

/// `struct ctdb_event_script`: one script's part of an event's result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventScript {
    pub name: Option<String>,
    pub begin: Timeval,
    pub end: Timeval,
    /// The script's exit status, or a negated errno (`-ENOEXEC` = disabled, `-ETIMEDOUT`).
    pub result: i32,
    /// Whatever the script wrote, kept as raw bytes because scripts owe us no encoding. It never
    /// contains a NUL: stock collects it as a C string.
    pub output: Option<Vec<u8>>,
}

impl EventScript {
    fn wire_len(&self) -> usize {
        name_wire_len(self.name.as_deref()) + 16 + 16 + 4 + stringn_wire_len(self.output.as_deref())
    }
    fn push(&self, out: &mut Vec<u8>) {
        push_name(out, self.name.as_deref());
        self.begin.push(out);
        self.end.push(out);
        out.put_i32(self.result);
        push_raw_stringn(out, self.output.as_deref());
    }
    fn pull(r: &mut Reader<'_>) -> Result<Self, PullError> {
        Ok(EventScript {
            name: pull_name(r)?,
            begin: Timeval {
                tv_sec: r.i64()?,
                tv_usec: r.i64()?,
            },
            end: Timeval {
                tv_sec: r.i64()?,
                tv_usec: r.i64()?,
            },
            result: r.i32()?,
            output: pull_raw_stringn(r)?.map(<[u8]>::to_vec),
        })
    }
}

/// `struct ctdb_event_reply_status`: the stored result of the last run of an event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusReply {
    /// 0, or the first failing script's result (negative errno or positive exit status).
    pub summary: i32,
    pub scripts: Vec<EventScript>,
}

impl StatusReply {
    fn wire_len(&self) -> usize {
        8 + self
            .scripts
            .iter()
            .map(EventScript::wire_len)
            .sum::<usize>()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_i32(self.summary);
        // The count is a C int; a list this long could never be framed anyway.
        out.put_len(self.scripts.len());
        for script in &self.scripts {
            script.push(out);
        }
    }
    fn pull(r: &mut Reader<'_>) -> Result<Self, PullError> {
        let summary = r.i32()?;
        let count = r.i32()?;
        let Ok(count) = usize::try_from(count) else {
            return Err(PullError::BadValue {
                what: "negative script count",
                value: u64::from(count.unsigned_abs()),
            });
        };
        if count.saturating_mul(MIN_SCRIPT_WIRE_LEN) > r.remaining() {
            return Err(PullError::BadLength {
                what: "script count",
                value: count,
            });
        }
        let mut scripts = Vec::with_capacity(count);
        for _ in 0..count {
            scripts.push(EventScript::pull(r)?);
        }
        Ok(StatusReply { summary, scripts })
    }
}

/// `struct ctdb_event_reply` without its header. A reply carries a body only when it is a
/// successful STATUS, so a failed STATUS holds its (non-zero) result instead of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventReply {
    /// 0, `ENOEXEC` (a script failed), `ETIMEDOUT`, `ECANCELED`, `ENOENT` (no such component)...
    Run(i32),
    /// `Err` holds the failure, e.g. `EINVAL` when the event has never run.
    Status(Result<StatusReply, std::num::NonZeroI32>),
    Script(i32),
}

impl EventReply {
    pub fn command(&self) -> EventCommand {
        match self {
            EventReply::Run(_) => EventCommand::Run,
            EventReply::Status(_) => EventCommand::Status,
            EventReply::Script(_) => EventCommand::Script,
        }
    }

    /// The `result` field.
    pub fn result(&self) -> i32 {
        match self {
            EventReply::Run(result) | EventReply::Script(result) => *result,
            EventReply::Status(Ok(_)) => 0,
            EventReply::Status(Err(result)) => result.get(),
        }
    }
}

impl Marshal for EventReply {
    fn wire_len(&self) -> usize {
        8 + match self {
            EventReply::Status(Ok(status)) => status.wire_len(),
            _ => 0,
        }
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.command().into());
        out.put_i32(self.result());
        if let EventReply::Status(Ok(status)) = self {
            status.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let command = EventCommand::pull(&mut r)?;
        let result = r.i32()?;
        let reply = match command {
            EventCommand::Status => match std::num::NonZeroI32::new(result) {
                Some(failure) => EventReply::Status(Err(failure)),
                None => EventReply::Status(Ok(StatusReply::pull(&mut r)?)),
            },
            EventCommand::Script => EventReply::Script(result),
            EventCommand::Run | EventCommand::Unknown(_) => EventReply::Run(result),
        };
        Ok((reply, r.pos()))
    }
}

/// A whole packet: header fields plus a [`EventRequest`] or [`EventReply`]. The header's
/// `length` is not stored; it is computed on push and used as the frame bound on pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPacket<T> {
    pub version: u32,
    pub reqid: u32,
    pub body: T,
}

pub type EventRequestPacket = EventPacket<EventRequest>;
pub type EventReplyPacket = EventPacket<EventReply>;

impl<T: Marshal> Marshal for EventPacket<T> {
    fn wire_len(&self) -> usize {
        EVENT_HEADER_LEN + self.body.wire_len()
    }

    fn push(&self, out: &mut Vec<u8>) {
        // A packet beyond 4 GiB cannot be framed at all; put_len refuses it rather than wrap.
        out.put_len(self.wire_len());
        out.put_u32(self.version);
        out.put_u32(self.reqid);
        self.body.push(out);
    }

    /// Parses one packet from the front of `buf`. Bytes after the body but inside `length` are
    /// ignored, as stock ignores them; the packet consumes exactly `length` bytes.
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let (header, _) = EventHeader::pull(buf)?;
        let length = header.length as usize;
        if length < EVENT_HEADER_LEN {
            return Err(PullError::BadLength {
                what: "event packet length",
                value: length,
            });
        }
        let Some(frame) = buf.get(..length) else {
            return Err(PullError::Short {
                need: length,
                have: buf.len(),
            });
        };
        let (body, _) = T::pull(&frame[EVENT_HEADER_LEN..])?;
        Ok((
            EventPacket {
                version: header.version,
                reqid: header.reqid,
                body,
            },
            length,
        ))
    }
}

/// The length of the first packet in a stream buffer once all of it has arrived; `Ok(None)`
/// means more bytes are needed. A length of 0 (which stock treats as a broken stream), one
/// shorter than a header, or one above [`MAX_EVENT_FRAME_LEN`] is an error, after which the
/// stream cannot be resynchronised.
pub fn complete_frame_len(buf: &[u8]) -> Result<Option<usize>, PullError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let mut r = Reader::new(prefix);
    let length = r.u32()? as usize;
    if !(EVENT_HEADER_LEN..=MAX_EVENT_FRAME_LEN).contains(&length) {
        return Err(PullError::BadLength {
            what: "event frame length",
            value: length,
        });
    }
    if buf.len() < length {
        return Ok(None);
    }
    Ok(Some(length))
}

/// Accumulates stream bytes and hands out whole packets, in the manner of `sock_queue` in
/// `ctdb/common/sock_io.c`.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a whole packet (or the packets not yet taken).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, PullError> {
        let Some(length) = complete_frame_len(&self.buf)? else {
            return Ok(None);
        };
        Ok(Some(self.buf.drain(..length).collect()))
    }
}

/// The `reqid` of a packet, without parsing the rest (`ctdb_event_header_extract`).
pub fn peek_reqid(frame: &[u8]) -> Result<u32, PullError> {
    Ok(EventHeader::pull(frame)?.0.reqid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{seeds, Prng};

    fn random_name(rng: &mut Prng) -> Option<String> {
        rng.bool().then(|| rng.string(12))
    }

    fn random_output(rng: &mut Prng) -> Option<Vec<u8>> {
        rng.bool()
            .then(|| (0..rng.below(40)).map(|_| rng.u8().max(1)).collect())
    }

    fn random_timeval(rng: &mut Prng) -> Timeval {
        Timeval {
            tv_sec: rng.i64(),
            tv_usec: rng.i64(),
        }
    }

    fn random_request(rng: &mut Prng) -> EventRequest {
        match rng.below(3) {
            0 => EventRequest::Run(RunRequest {
                component: random_name(rng),
                event: random_name(rng),
                args: random_name(rng),
                timeout: rng.u32(),
                flags: rng.u32(),
            }),
            1 => EventRequest::Status(StatusRequest {
                component: random_name(rng),
                event: random_name(rng),
            }),
            _ => EventRequest::Script(ScriptRequest {
                component: random_name(rng),
                script: random_name(rng),
                action: if rng.bool() {
                    ScriptAction::Enable
                } else {
                    ScriptAction::Disable
                },
            }),
        }
    }

    fn random_reply(rng: &mut Prng) -> EventReply {
        match rng.below(4) {
            0 => EventReply::Run(rng.i32()),
            1 => EventReply::Script(rng.i32()),
            2 => EventReply::Status(Err(std::num::NonZeroI32::new(rng.i32())
                .unwrap_or(std::num::NonZeroI32::new(22).unwrap()))),
            _ => EventReply::Status(Ok(StatusReply {
                summary: rng.i32(),
                scripts: (0..rng.below(5))
                    .map(|_| EventScript {
                        name: random_name(rng),
                        begin: random_timeval(rng),
                        end: random_timeval(rng),
                        result: rng.i32(),
                        output: random_output(rng),
                    })
                    .collect(),
            })),
        }
    }

    fn check_round_trip<T: Marshal + PartialEq + std::fmt::Debug>(seed: u64, value: &T) {
        let bytes = value.to_bytes();
        assert_eq!(bytes.len(), value.wire_len(), "seed {seed}: {value:?}");
        let (back, used) = T::pull(&bytes).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(&back, value, "seed {seed}");
        assert_eq!(used, bytes.len(), "seed {seed}");
        for cut in 0..bytes.len() {
            assert!(
                T::pull(&bytes[..cut]).is_err(),
                "seed {seed}: prefix {cut} of {value:?} accepted"
            );
        }
    }

    fn random_request_packet(rng: &mut Prng) -> EventRequestPacket {
        EventPacket {
            version: rng.u32(),
            reqid: rng.u32(),
            body: random_request(rng),
        }
    }

    fn random_reply_packet(rng: &mut Prng) -> EventReplyPacket {
        EventPacket {
            version: rng.u32(),
            reqid: rng.u32(),
            body: random_reply(rng),
        }
    }

    #[test]
    fn requests_round_trip_and_reject_truncation() {
        for seed in seeds(300) {
            let mut rng = Prng::new(seed);
            check_round_trip(seed, &random_request(&mut rng));
            check_round_trip(seed, &random_request_packet(&mut rng));
        }
    }

    #[test]
    fn replies_round_trip_and_reject_truncation() {
        for seed in seeds(300) {
            let mut rng = Prng::new(seed);
            check_round_trip(seed, &random_reply(&mut rng));
            check_round_trip(seed, &random_reply_packet(&mut rng));
        }
    }

    #[test]
    fn header_round_trip() {
        for seed in seeds(50) {
            let mut rng = Prng::new(seed);
            check_round_trip(
                seed,
                &EventHeader {
                    length: rng.u32(),
                    version: rng.u32(),
                    reqid: rng.u32(),
                },
            );
        }
    }

    /// Random bytes, and random mutations of valid packets, must never panic; whatever parses
    /// must survive a second round trip unchanged.
    #[test]
    fn random_input_never_panics() {
        for seed in seeds(2000) {
            let mut rng = Prng::new(seed);
            let mut bytes = if rng.bool() {
                rng.bytes(80)
            } else if rng.bool() {
                random_request_packet(&mut rng).to_bytes()
            } else {
                random_reply_packet(&mut rng).to_bytes()
            };
            for _ in 0..rng.below(4) {
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.u8();
                }
            }
            if let Ok((packet, used)) = EventRequestPacket::pull(&bytes) {
                assert!(used <= bytes.len(), "seed {seed}");
                let again = packet.to_bytes();
                assert_eq!(
                    EventRequestPacket::from_bytes_exact(&again).unwrap(),
                    packet,
                    "seed {seed}"
                );
            }
            if let Ok((packet, used)) = EventReplyPacket::pull(&bytes) {
                assert!(used <= bytes.len(), "seed {seed}");
                let again = packet.to_bytes();
                assert_eq!(
                    EventReplyPacket::from_bytes_exact(&again).unwrap(),
                    packet,
                    "seed {seed}"
                );
            }
            let _ = complete_frame_len(&bytes);
            let _ = peek_reqid(&bytes);
        }
    }

    #[test]
    fn null_and_empty_strings_differ_on_the_wire() {
        let null = EventRequest::Status(StatusRequest {
            component: None,
            event: Some(String::new()),
        });
        let bytes = null.to_bytes();
        assert_eq!(bytes, [2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(EventRequest::from_bytes_exact(&bytes).unwrap(), null);
    }

    #[test]
    fn malformed_strings_are_rejected() {
        // Declared length 3 but the NUL is the second byte, as stock would half-consume.
        let early_nul = [2, 0, 0, 0, 3, 0, 0, 0, b'a', 0, b'b', 0, 0, 0, 0];
        assert!(EventRequest::pull(&early_nul).is_err());
        let no_nul = [2, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0];
        assert!(EventRequest::pull(&no_nul).is_err());
    }

    #[test]
    fn unknown_command_and_action_are_rejected() {
        assert!(EventRequest::pull(&[4, 0, 0, 0]).is_err());
        assert!(EventReply::pull(&[0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let bad_action = [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        assert!(EventRequest::pull(&bad_action).is_err());
    }

    #[test]
    fn failed_status_has_no_body_and_negative_count_is_rejected() {
        let failed = EventReply::Status(Err(std::num::NonZeroI32::new(22).unwrap()));
        assert_eq!(failed.to_bytes(), [2, 0, 0, 0, 22, 0, 0, 0]);
        let negative = [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(EventReply::pull(&negative).is_err());
        // A successful RUN or SCRIPT reply never has a body either.
        assert_eq!(EventReply::Run(0).to_bytes(), [1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn packet_length_bounds_the_body_and_tolerates_padding() {
        let packet = EventPacket {
            version: 0,
            reqid: 7,
            body: EventReply::Script(0),
        };
        let mut bytes = packet.to_bytes();
        assert_eq!(bytes[..4], 20u32.to_ne_bytes());
        // Trailing bytes inside the declared length are ignored and consumed.
        bytes.extend_from_slice(&[9, 9]);
        bytes[..4].copy_from_slice(&22u32.to_ne_bytes());
        assert_eq!(
            EventReplyPacket::pull(&bytes).unwrap(),
            (packet.clone(), 22)
        );
        // A length shorter than the body cuts it off.
        bytes[..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(EventReplyPacket::pull(&bytes).is_err());
        bytes[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(EventReplyPacket::pull(&bytes).is_err());
    }

    #[test]
    fn frame_buffer_reassembles_split_packets() {
        let first = EventPacket {
            version: 0,
            reqid: 1,
            body: EventReply::Run(0),
        }
        .to_bytes();
        let second = EventPacket {
            version: 0,
            reqid: 2,
            body: EventReply::Run(8),
        }
        .to_bytes();
        let stream = [first.clone(), second.clone()].concat();
        for split in 0..=stream.len() {
            let mut frames = FrameBuffer::new();
            frames.extend(&stream[..split]);
            let mut got = Vec::new();
            while let Some(frame) = frames.next_frame().unwrap() {
                got.push(frame);
            }
            frames.extend(&stream[split..]);
            while let Some(frame) = frames.next_frame().unwrap() {
                got.push(frame);
            }
            assert_eq!(got, vec![first.clone(), second.clone()], "split {split}");
            assert_eq!(frames.pending(), 0);
        }
        assert_eq!(peek_reqid(&second), Ok(2));
    }

    #[test]
    fn frame_lengths_outside_the_bounds_are_errors() {
        assert_eq!(complete_frame_len(&[0, 0, 0]), Ok(None));
        assert!(complete_frame_len(&[0, 0, 0, 0]).is_err());
        assert!(complete_frame_len(&[11, 0, 0, 0]).is_err());
        assert!(complete_frame_len(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(complete_frame_len(&[12, 0, 0, 0, 0]), Ok(None));
        assert_eq!(
            complete_frame_len(&[12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]),
            Ok(Some(12))
        );
    }

    #[test]
    fn command_names_match_stock() {
        assert_eq!(EventCommand::Run.name(), "RUN");
        assert_eq!(EventCommand::Status.name(), "STATUS");
        assert_eq!(EventCommand::Script.name(), "SCRIPT");
        assert_eq!(EventCommand::from(9).name(), "UNKNOWN");
    }
}
/// Packets captured from stock ctdb-eventd 4.17.12 (see `tests/golden/eventd/MANIFEST.md`).
/// Each must decode to the listed value and re-encode to the identical bytes.
#[cfg(test)]
mod golden {
    use super::*;
    use std::num::NonZeroI32;

    /// What every stock `ctdb-event` invocation uses as its first (and only) reqid.
    const TOOL_REQID: u32 = 0x7fff_ff38;

    macro_rules! golden {
        ($name:literal) => {
            (
                include_bytes!(concat!("../../tests/golden/eventd/", $name, ".request.bin"))
                    .as_slice(),
                include_bytes!(concat!("../../tests/golden/eventd/", $name, ".reply.bin"))
                    .as_slice(),
            )
        };
    }

    fn check(
        name: &str,
        files: (&[u8], &[u8]),
        request: EventRequestPacket,
        reply: EventReplyPacket,
    ) {
        let (request_bytes, reply_bytes) = files;
        assert_eq!(
            EventRequestPacket::from_bytes_exact(request_bytes),
            Ok(request.clone()),
            "{name} request"
        );
        assert_eq!(
            request.to_bytes(),
            request_bytes,
            "{name} request re-encoded"
        );
        assert_eq!(
            EventReplyPacket::from_bytes_exact(reply_bytes),
            Ok(reply.clone()),
            "{name} reply"
        );
        assert_eq!(reply.to_bytes(), reply_bytes, "{name} reply re-encoded");
        assert_eq!(
            complete_frame_len(request_bytes),
            Ok(Some(request_bytes.len()))
        );
        assert_eq!(complete_frame_len(reply_bytes), Ok(Some(reply_bytes.len())));
    }

    fn packet<T>(reqid: u32, body: T) -> EventPacket<T> {
        EventPacket {
            version: 0,
            reqid,
            body,
        }
    }

    fn run(
        component: &str,
        event: &str,
        args: Option<&str>,
        timeout: u32,
        flags: u32,
    ) -> EventRequest {
        EventRequest::Run(RunRequest {
            component: Some(component.into()),
            event: Some(event.into()),
            args: args.map(Into::into),
            timeout,
            flags,
        })
    }

    fn status(component: &str, event: &str) -> EventRequest {
        EventRequest::Status(StatusRequest {
            component: Some(component.into()),
            event: Some(event.into()),
        })
    }

    fn script(
        name: &str,
        begin: (i64, i64),
        end: (i64, i64),
        result: i32,
        output: Option<&str>,
    ) -> EventScript {
        EventScript {
            name: Some(name.into()),
            begin: Timeval {
                tv_sec: begin.0,
                tv_usec: begin.1,
            },
            end: Timeval {
                tv_sec: end.0,
                tv_usec: end.1,
            },
            result,
            output: output.map(|o| o.as_bytes().to_vec()),
        }
    }

    fn failed(result: i32) -> EventReply {
        EventReply::Status(Err(NonZeroI32::new(result).unwrap()))
    }

    const T: i64 = 1_795_692_204;

    #[test]
    fn run_monitor_stops_at_the_failing_script() {
        check(
            "run_monitor",
            golden!("run_monitor"),
            packet(TOOL_REQID, run("legacy", "monitor", None, 30, 0)),
            packet(TOOL_REQID, EventReply::Run(8)),
        );
    }

    #[test]
    fn status_monitor_lists_only_the_scripts_that_ran() {
        check(
            "status_monitor",
            golden!("status_monitor"),
            packet(TOOL_REQID, status("legacy", "monitor")),
            packet(
                TOOL_REQID,
                EventReply::Status(Ok(StatusReply {
                    summary: 1,
                    scripts: vec![
                        script("01.good", (T, 67), (T, 1600), 0, Some("good: monitor\n")),
                        script(
                            "02.fail",
                            (T, 1650),
                            (T, 2923),
                            1,
                            Some("fail: monitor is unhappy\n"),
                        ),
                    ],
                })),
            ),
        );
    }

    #[test]
    fn run_with_arguments_and_run_all() {
        check(
            "run_takeip_all",
            golden!("run_takeip_all"),
            packet(
                TOOL_REQID,
                run(
                    "legacy",
                    "takeip",
                    Some("eth0 10.0.0.1 24"),
                    30,
                    EVENT_RUN_ALL,
                ),
            ),
            packet(TOOL_REQID, EventReply::Run(0)),
        );
    }

    #[test]
    fn status_reports_silent_and_disabled_scripts_with_null_output() {
        check(
            "status_takeip",
            golden!("status_takeip"),
            packet(TOOL_REQID, status("legacy", "takeip")),
            packet(
                TOOL_REQID,
                EventReply::Status(Ok(StatusReply {
                    summary: 0,
                    scripts: vec![
                        script(
                            "01.good",
                            (T, 47004),
                            (T, 48409),
                            0,
                            Some("good: takeip eth0 10.0.0.1 24\n"),
                        ),
                        script("02.fail", (T, 48461), (T, 49765), 0, None),
                        script("03.off", (T, 49768), (T, 49774), -8, None),
                    ],
                })),
            ),
        );
    }

    #[test]
    fn status_of_an_event_never_run_is_einval() {
        check(
            "status_never_run",
            golden!("status_never_run"),
            packet(TOOL_REQID, status("legacy", "startup")),
            packet(TOOL_REQID, failed(22)),
        );
    }

    #[test]
    fn run_of_a_missing_component_is_enoent() {
        check(
            "run_no_component",
            golden!("run_no_component"),
            packet(TOOL_REQID, run("nosuch", "monitor", None, 30, 0)),
            packet(TOOL_REQID, EventReply::Run(2)),
        );
    }

    #[test]
    fn run_timeout_is_positive_etimedout() {
        check(
            "run_timeout",
            golden!("run_timeout"),
            packet(TOOL_REQID, run("legacy", "startrecovery", None, 1, 0)),
            packet(TOOL_REQID, EventReply::Run(110)),
        );
    }

    #[test]
    fn status_after_timeout_has_negative_etimedout_summary() {
        check(
            "status_timeout",
            golden!("status_timeout"),
            packet(TOOL_REQID, status("legacy", "startrecovery")),
            packet(
                TOOL_REQID,
                EventReply::Status(Ok(StatusReply {
                    summary: -110,
                    scripts: vec![
                        script(
                            "01.good",
                            (T, 133_182),
                            (T, 134_614),
                            0,
                            Some("good: startrecovery\n"),
                        ),
                        script("02.fail", (T, 134_666), (T + 1, 134_214), -110, None),
                    ],
                })),
            ),
        );
    }

    fn script_request(name: &str, action: ScriptAction) -> EventRequest {
        EventRequest::Script(ScriptRequest {
            component: Some("legacy".into()),
            script: Some(name.into()),
            action,
        })
    }

    #[test]
    fn script_enable_and_disable() {
        check(
            "script_disable",
            golden!("script_disable"),
            packet(101, script_request("01.good", ScriptAction::Disable)),
            packet(101, EventReply::Script(0)),
        );
        check(
            "script_enable",
            golden!("script_enable"),
            packet(102, script_request("01.good.script", ScriptAction::Enable)),
            packet(102, EventReply::Script(0)),
        );
        check(
            "script_enable_missing",
            golden!("script_enable_missing"),
            packet(103, script_request("99.missing", ScriptAction::Enable)),
            packet(103, EventReply::Script(2)),
        );
    }
}
