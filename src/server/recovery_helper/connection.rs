//! The helper's connection to the local ctdbd: a single-threaded unix-socket client that
//! keeps several controls outstanding at once (what `ctdb_client_control_multi_send` does
//! with tevent) and dispatches the messages that arrive between their replies.
//!
//! Requests are written in full before any reply is awaited; replies are matched by reqid.
//! Messages are only wanted for the srvid whose collection is under way (the records of a
//! DB_PULL); any other message is dropped, as stock drops messages nobody has a handler for.

use super::transport::{Disconnected, MultiOutcome, Outcome, Payload, Request, Transport};
use crate::common::clock::{Instant, MonotonicClock};
use crate::protocol::header::{Operation, ReqHeader, CURRENT_NODE};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{
    Body, FrameError, FrameReader, MessageBuffer, MessageView, Packet, Padding, ReqControl,
};
use crate::protocol::types::UNKNOWN_PNN;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Frames above this size are treated as a broken stream (a DB_PULL message is about
/// `RecBufferSizeLimit` plus one record).
const MAX_FRAME_LEN: u32 = 1 << 30;

/// How long a control may take before the first GET_ALL_TUNABLES tells us `RecoverTimeout`
/// (stock's `recover_timeout` starts at 30 s).
pub const INITIAL_TIMEOUT: Duration = Duration::from_secs(30);

const READ_CHUNK: usize = 256 * 1024;

/// Why the connection could not be set up.
#[derive(Debug)]
pub enum ConnectError {
    Connect(std::io::Error),
    /// GET_PNN failed: the errno or the reply status.
    GetPnn(i32),
    Disconnected,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Connect(e) => write!(f, "connect() failed, errno={}", errno_of(e)),
            ConnectError::GetPnn(ret) => write!(f, "GET_PNN failed, ret={ret}"),
            ConnectError::Disconnected => write!(f, "connection to daemon closed"),
        }
    }
}

impl ConnectError {
    /// The errno stock reports for the failure.
    pub fn errno(&self) -> i32 {
        match self {
            ConnectError::Connect(e) => errno_of(e),
            ConnectError::GetPnn(ret) => *ret,
            ConnectError::Disconnected => libc::EPIPE,
        }
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The srvids whose messages are wanted, and where they go (with the srvid's index).
type Collector<'a> = (&'a [u64], &'a mut dyn FnMut(usize, Payload));

/// A live connection to the local daemon.
pub struct DaemonConnection {
    stream: UnixStream,
    reader: FrameReader,
    pnn: u32,
    next_reqid: u32,
    timeout: Duration,
    clock: MonotonicClock,
    /// Called whenever a wait is interrupted by a signal (the helper reopens its log file
    /// after SIGHUP there).
    on_interrupt: Option<Box<dyn FnMut()>>,
}

impl std::fmt::Debug for DaemonConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonConnection")
            .field("pnn", &self.pnn)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DaemonConnection {
    /// Connects and asks the daemon for our pnn, like `ctdb_client_init`.
    pub fn connect(
        socket: &Path,
        on_interrupt: Option<Box<dyn FnMut()>>,
    ) -> Result<Self, ConnectError> {
        let stream = UnixStream::connect(socket).map_err(ConnectError::Connect)?;
        let mut conn = Self::over(stream, UNKNOWN_PNN, on_interrupt);
        let request = Request {
            opcode: ControlOpcode::GetPnn,
            srvid: 0,
            flags: 0,
            data: Vec::new(),
        };
        let reply = conn
            .control(CURRENT_NODE, &request)
            .map_err(|Disconnected| ConnectError::Disconnected)?
            .map_err(ConnectError::GetPnn)?;
        conn.pnn = u32::try_from(reply.status).map_err(|_| ConnectError::GetPnn(reply.status))?;
        Ok(conn)
    }

    /// A connection over an already connected stream, for a node whose pnn is known.
    fn over(stream: UnixStream, pnn: u32, on_interrupt: Option<Box<dyn FnMut()>>) -> Self {
        DaemonConnection {
            stream,
            reader: FrameReader::new(MAX_FRAME_LEN),
            pnn,
            next_reqid: 1,
            timeout: INITIAL_TIMEOUT,
            clock: MonotonicClock::new(),
            on_interrupt,
        }
    }

    fn alloc_reqid(&mut self) -> u32 {
        let reqid = self.next_reqid;
        self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
        reqid
    }

    fn send(&mut self, destnode: u32, body: Body) -> Result<u32, Disconnected> {
        let reqid = self.alloc_reqid();
        let packet = Packet {
            generation: 0,
            destnode,
            srcnode: self.pnn,
            reqid,
            body,
        };
        self.write_frame(&packet.encode(Padding::Align8))?;
        Ok(reqid)
    }

    fn write_frame(&mut self, bytes: &[u8]) -> Result<(), Disconnected> {
        // A write can only block while the daemon is busy sending to us; it never stops
        // reading its clients, so a generous timeout only guards against a wedged daemon.
        let _ = self
            .stream
            .set_write_timeout(Some(self.timeout.max(Duration::from_secs(1))));
        loop {
            match self.stream.write_all(bytes) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => self.interrupted(),
                Err(_) => return Err(Disconnected),
            }
        }
    }

    fn interrupted(&mut self) {
        if let Some(hook) = self.on_interrupt.as_mut() {
            hook();
        }
    }

    /// The next packet, or `None` once `deadline` has passed.
    /// The next frame from the daemon, `None` once `deadline` passed. Bytes are read straight
    /// into the frame reader, so a large message (a DB_PULL buffer) arrives in a buffer of its
    /// own and is never copied here.
    fn next_frame(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, Disconnected> {
        loop {
            match self.reader.next_frame() {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(FrameError::TooShort { .. }) => continue,
                Err(_) => return Err(Disconnected),
            }
            let now = self.clock.now();
            if now >= deadline {
                return Ok(None);
            }
            let left = deadline.saturating_since(now).max(Duration::from_millis(1));
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return Err(Disconnected);
            }
            match self.stream.read(self.reader.read_space(READ_CHUNK)) {
                Ok(0) => return Err(Disconnected),
                Ok(n) => self.reader.commit(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => self.interrupted(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Err(Disconnected),
            }
        }
    }

    /// Sends `request` to every node, then waits for all replies, handing messages for
    /// `collect`'s srvid to its sink meanwhile.
    fn exchange(
        &mut self,
        pnns: &[u32],
        request: &Request,
        collect: Option<Collector<'_>>,
    ) -> Result<MultiOutcome, Disconnected> {
        let requests: Vec<(u32, &Request)> = pnns.iter().map(|&pnn| (pnn, request)).collect();
        let (outcomes, order) = self.exchange_batch(&requests, collect)?;
        Ok(MultiOutcome::from_arrivals(outcomes, &order))
    }

    /// Sends every control, then waits for all replies; the outcomes in request order and
    /// the order in which they completed.
    fn exchange_batch(
        &mut self,
        requests: &[(u32, &Request)],
        mut collect: Option<Collector<'_>>,
    ) -> Result<(Vec<Outcome>, Vec<usize>), Disconnected> {
        let deadline = self.clock.now().saturating_add(self.timeout);
        let mut pending: HashMap<u32, usize> = HashMap::with_capacity(requests.len());
        for (index, &(pnn, request)) in requests.iter().enumerate() {
            let body = Body::ReqControl(ReqControl {
                opcode: request.opcode,
                srvid: request.srvid,
                client_id: 0,
                flags: request.flags,
                data: request.data.clone(),
            });
            let reqid = self.send(pnn, body)?;
            pending.insert(reqid, index);
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
        let mut order = Vec::with_capacity(requests.len());
        while !pending.is_empty() {
            let Some(frame) = self.next_frame(deadline)? else {
                // Every outstanding control times out together; stock's timers fire in the
                // order the controls were sent.
                let mut left: Vec<usize> = pending.drain().map(|(_, index)| index).collect();
                left.sort_unstable();
                for index in left {
                    outcomes[index] = Some(Err(libc::ETIMEDOUT));
                    order.push(index);
                }
                break;
            };
            if let Some(message) = MessageView::parse(&frame) {
                if let Some((srvids, sink)) = collect.as_mut() {
                    if let Some(index) = srvids.iter().position(|&s| s == message.srvid) {
                        if let Some(payload) = Payload::within(frame, message.data) {
                            sink(index, payload);
                        }
                    }
                }
                continue;
            }
            let packet = match Packet::pull(&frame) {
                Ok(packet) => packet,
                // Stock's client logs and skips packets it cannot parse.
                Err(e) => {
                    log::warn!("invalid packet from ctdbd: {e}");
                    continue;
                }
            };
            if let Body::ReplyControl(reply) = packet.body {
                if let Some(index) = pending.remove(&packet.reqid) {
                    outcomes[index] = Some(Ok(reply));
                    order.push(index);
                }
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Err(libc::EIO)))
            .collect();
        Ok((outcomes, order))
    }
}

impl Transport for DaemonConnection {
    fn pnn(&self) -> u32 {
        self.pnn
    }

    fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn control_multi(
        &mut self,
        pnns: &[u32],
        request: &Request,
    ) -> Result<MultiOutcome, Disconnected> {
        self.exchange(pnns, request, None)
    }

    fn control_collecting(
        &mut self,
        pnn: u32,
        request: &Request,
        srvid: u64,
        sink: &mut dyn FnMut(Payload),
    ) -> Result<Outcome, Disconnected> {
        let srvids = [srvid];
        let mut indexed = |_: usize, payload: Payload| sink(payload);
        let mut multi = self.exchange(&[pnn], request, Some((&srvids, &mut indexed)))?;
        Ok(multi.outcomes.pop().unwrap_or(Err(libc::EIO)))
    }

    fn controls_collecting(
        &mut self,
        requests: &[(u32, Request)],
        srvids: &[u64],
        sink: &mut dyn FnMut(usize, Payload),
    ) -> Result<Vec<Outcome>, Disconnected> {
        let requests: Vec<(u32, &Request)> = requests.iter().map(|(pnn, r)| (*pnn, r)).collect();
        let (outcomes, _) = self.exchange_batch(&requests, Some((srvids, sink)))?;
        Ok(outcomes)
    }

    fn control_batch(
        &mut self,
        requests: &[(u32, Request)],
    ) -> Result<(Vec<Outcome>, Vec<usize>), Disconnected> {
        let requests: Vec<(u32, &Request)> = requests.iter().map(|(pnn, r)| (*pnn, r)).collect();
        self.exchange_batch(&requests, None)
    }

    fn message_to(
        &mut self,
        pnn: u32,
        srvid: u64,
        data: MessageBuffer,
    ) -> Result<(), Disconnected> {
        let reqid = self.alloc_reqid();
        let header = ReqHeader::new(0, Operation::ReqMessage, pnn, self.pnn, reqid);
        self.write_frame(&data.into_frame(&header, srvid, Padding::Align8))
    }

    fn message_multi(&mut self, pnns: &[u32], srvid: u64, data: &[u8]) -> Result<(), Disconnected> {
        for &pnn in pnns {
            self.message_to(pnn, srvid, MessageBuffer::from_payload(data))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::{ReplyControl, ReqMessage};

    /// Our connection and the daemon's end of it. Everything the "daemon" says is written
    /// before the helper asks (the socket buffers it), so no second thread is needed.
    fn pair() -> (DaemonConnection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut conn = DaemonConnection::over(ours, 2, None);
        conn.set_timeout(Duration::from_millis(100));
        (conn, theirs)
    }

    fn say(daemon: &mut UnixStream, reqid: u32, body: Body) {
        let packet = Packet {
            generation: 0,
            destnode: 2,
            srcnode: 2,
            reqid,
            body,
        };
        daemon.write_all(&packet.encode(Padding::Align8)).unwrap();
    }

    fn reply(status: i32, data: &[u8]) -> Body {
        Body::ReplyControl(ReplyControl {
            status,
            data: data.to_vec(),
            errmsg: Vec::new(),
        })
    }

    fn message(srvid: u64, data: &[u8]) -> Body {
        Body::ReqMessage(ReqMessage {
            srvid,
            data: data.to_vec(),
        })
    }

    /// The packets the helper wrote.
    fn heard(daemon: &mut UnixStream) -> Vec<Packet> {
        daemon.set_nonblocking(true).unwrap();
        let mut reader = FrameReader::new(MAX_FRAME_LEN);
        let mut buf = [0u8; 4096];
        while let Ok(n) = daemon.read(&mut buf) {
            if n == 0 {
                break;
            }
            reader.feed(&buf[..n]);
        }
        let mut out = Vec::new();
        while let Ok(Some(frame)) = reader.next_frame() {
            assert_eq!(frame.len() % 8, 0, "frames are padded to 8");
            out.push(Packet::pull(&frame).unwrap());
        }
        out
    }

    fn request() -> Request {
        Request::new(
            ControlOpcode::GetCapabilities,
            crate::protocol::control::ControlRequestData::Empty,
        )
    }

    #[test]
    fn multi_waits_for_every_node_and_remembers_the_first_failure() {
        let (mut conn, mut daemon) = pair();
        // Replies out of order, a message nobody collects, and no reply for reqid 2.
        say(&mut daemon, 3, reply(-1, b""));
        say(&mut daemon, 0, message(77, b"ignored"));
        say(&mut daemon, 1, reply(0, &5u32.to_ne_bytes()));
        let outcome = conn.control_multi(&[0, 1, 4], &request()).unwrap();
        assert_eq!(outcome.first_failure, Some(2));
        assert_eq!(outcome.error(), Some((-1, 2)));
        assert!(
            matches!(&outcome.outcomes[0], Ok(r) if r.status == 0 && r.data == 5u32.to_ne_bytes())
        );
        assert_eq!(outcome.outcomes[1], Err(libc::ETIMEDOUT));

        let sent = heard(&mut daemon);
        let dests: Vec<(u32, u32, u32)> = sent
            .iter()
            .map(|p| (p.destnode, p.srcnode, p.reqid))
            .collect();
        assert_eq!(dests, vec![(0, 2, 1), (1, 2, 2), (4, 2, 3)]);
        assert!(sent.iter().all(|p| matches!(
            &p.body,
            Body::ReqControl(c) if c.opcode == ControlOpcode::GetCapabilities
        )));
    }

    #[test]
    fn a_batch_sends_different_controls_at_once_and_reports_arrival_order() {
        let (mut conn, mut daemon) = pair();
        say(&mut daemon, 3, reply(0, b""));
        say(&mut daemon, 1, reply(-1, b""));
        let other = Request::new(
            ControlOpcode::Ipreallocated,
            crate::protocol::control::ControlRequestData::Empty,
        );
        let batch = [(0, request()), (1, other.clone()), (2, other)];
        let (outcomes, order) = conn.control_batch(&batch).unwrap();
        assert_eq!(order, vec![2, 0, 1]);
        assert!(matches!(&outcomes[0], Ok(r) if r.status == -1));
        assert_eq!(outcomes[1], Err(libc::ETIMEDOUT));
        assert!(matches!(&outcomes[2], Ok(r) if r.status == 0));
        let sent: Vec<(u32, ControlOpcode)> = heard(&mut daemon)
            .into_iter()
            .filter_map(|p| match p.body {
                Body::ReqControl(c) => Some((p.destnode, c.opcode)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                (0, ControlOpcode::GetCapabilities),
                (1, ControlOpcode::Ipreallocated),
                (2, ControlOpcode::Ipreallocated)
            ]
        );
    }

    #[test]
    fn collecting_hands_over_only_the_wanted_srvid_until_the_reply() {
        let (mut conn, mut daemon) = pair();
        say(&mut daemon, 0, message(10, b"one"));
        say(&mut daemon, 0, message(11, b"other"));
        say(&mut daemon, 0, message(10, b"two"));
        say(&mut daemon, 1, reply(0, &2u32.to_ne_bytes()));
        say(&mut daemon, 0, message(10, b"late"));
        let mut got = Vec::new();
        let outcome = conn
            .control_collecting(1, &request(), 10, &mut |data| {
                got.push(data.bytes().to_vec())
            })
            .unwrap();
        assert_eq!(outcome.unwrap().status, 0);
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn several_collections_run_at_once_until_every_reply() {
        let (mut conn, mut daemon) = pair();
        say(&mut daemon, 0, message(21, b"b1"));
        say(&mut daemon, 0, message(20, b"a1"));
        say(&mut daemon, 0, message(99, b"other"));
        say(&mut daemon, 2, reply(0, b""));
        // Node 0's pull is still open after node 1 replied.
        say(&mut daemon, 0, message(20, b"a2"));
        say(&mut daemon, 1, reply(0, b""));
        say(&mut daemon, 0, message(20, b"late"));
        let batch = [(0, request()), (1, request())];
        let mut got = Vec::new();
        let outcomes = conn
            .controls_collecting(&batch, &[20, 21], &mut |index, data| {
                got.push((index, data.bytes().to_vec()))
            })
            .unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Ok(r) if r.status == 0)));
        assert_eq!(
            got,
            vec![
                (1, b"b1".to_vec()),
                (0, b"a1".to_vec()),
                (0, b"a2".to_vec())
            ]
        );
    }

    #[test]
    fn messages_go_to_every_node_and_a_closed_socket_is_fatal() {
        let (mut conn, mut daemon) = pair();
        conn.message_multi(&[0, 1], 99, b"data").unwrap();
        let sent = heard(&mut daemon);
        assert_eq!(sent.len(), 2);
        for (packet, dest) in sent.iter().zip([0, 1]) {
            assert_eq!(packet.destnode, dest);
            assert_eq!(
                packet.body,
                Body::ReqMessage(ReqMessage {
                    srvid: 99,
                    data: b"data".to_vec()
                })
            );
        }
        drop(daemon);
        assert_eq!(conn.control_multi(&[0], &request()), Err(Disconnected));
    }

    #[test]
    fn a_message_built_in_place_is_the_same_packet() {
        let (mut conn, mut daemon) = pair();
        for len in 0..20 {
            let data: Vec<u8> = (0..len).collect();
            conn.message_multi(&[1], 7, &data).unwrap();
            conn.message_to(1, 7, MessageBuffer::from_payload(&data))
                .unwrap();
            let sent = heard(&mut daemon);
            assert_eq!(sent.len(), 2);
            assert_eq!(sent[0].destnode, sent[1].destnode);
            assert_eq!(sent[0].srcnode, sent[1].srcnode);
            assert_eq!(sent[0].generation, sent[1].generation);
            assert_eq!(sent[0].body, sent[1].body, "payload of {len} bytes");
            assert_ne!(sent[0].reqid, sent[1].reqid);
        }
    }
}
