//! What the recovery needs from its connection to the local ctdbd, as a trait, so that the
//! recovery logic runs unchanged against the real daemon ([`super::connection`]) and against
//! a simulated cluster in unit tests.
//!
//! The semantics are those of the stock client library (`ctdb/client/client_control.c`,
//! `client_message.c`): a control either gets a reply (whatever its status) or fails with an
//! errno (`ETIMEDOUT` when no reply came in time); a control to several nodes waits for every
//! node and remembers which node failed first.

use crate::protocol::control::ControlRequestData;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{MessageBuffer, ReplyControl};
use std::ops::Range;
use std::time::Duration;

/// A message's payload, still inside the buffer it arrived in: a DB_PULL message is up to
/// `RecBufferSizeLimit` bytes, and keeping the received frame spares copying it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    buffer: Vec<u8>,
    range: Range<usize>,
}

impl Payload {
    /// All of `buffer`.
    pub fn whole(buffer: Vec<u8>) -> Self {
        let range = 0..buffer.len();
        Payload { buffer, range }
    }

    /// `buffer[range]`; `None` when the range is not inside the buffer.
    pub fn within(buffer: Vec<u8>, range: Range<usize>) -> Option<Self> {
        buffer.get(range.clone())?;
        Some(Payload { buffer, range })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }

    /// The buffer and where the payload lies in it.
    pub fn into_parts(self) -> (Vec<u8>, Range<usize>) {
        (self.buffer, self.range)
    }
}

/// One control as the helper sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub opcode: ControlOpcode,
    /// The header's srvid field (used by REGISTER_SRVID / DEREGISTER_SRVID).
    pub srvid: u64,
    pub flags: u32,
    pub data: Vec<u8>,
}

impl Request {
    pub fn new(opcode: ControlOpcode, data: ControlRequestData) -> Self {
        Request {
            opcode,
            srvid: 0,
            flags: 0,
            data: data.to_bytes(),
        }
    }

    pub fn with_flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    pub fn with_srvid(mut self, srvid: u64) -> Self {
        self.srvid = srvid;
        self
    }
}

/// The connection to the local daemon is gone; stock's client exits at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

/// The reply to one control, or the errno for why none came.
pub type Outcome = Result<ReplyControl, i32>;

/// The replies of a control sent to several nodes, in the order of the node list.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiOutcome {
    pub outcomes: Vec<Outcome>,
    /// The index of the first node (in arrival order) whose control failed or whose reply
    /// had a non-zero status: the node stock names in its error message.
    pub first_failure: Option<usize>,
}

impl MultiOutcome {
    /// Builds the summary from outcomes listed in arrival order (`order[i]` is the node index
    /// of the i-th completion).
    pub fn from_arrivals(outcomes: Vec<Outcome>, order: &[usize]) -> Self {
        let first_failure = order.iter().copied().find(|&i| match outcomes.get(i) {
            Some(Ok(reply)) => reply.status != 0,
            Some(Err(_)) => true,
            None => false,
        });
        MultiOutcome {
            outcomes,
            first_failure,
        }
    }

    /// `(error, index)` of the first failure: the errno, or the reply status.
    pub fn error(&self) -> Option<(i32, usize)> {
        let index = self.first_failure?;
        match self.outcomes.get(index)? {
            Ok(reply) => Some((reply.status, index)),
            Err(errno) => Some((*errno, index)),
        }
    }

    /// The replies, when every node answered with status 0.
    pub fn into_replies(self) -> Option<Vec<ReplyControl>> {
        if self.first_failure.is_some() {
            return None;
        }
        self.outcomes.into_iter().map(Result::ok).collect()
    }
}

/// The helper's view of its connection to the local ctdbd.
pub trait Transport {
    /// The local node's pnn (learnt with GET_PNN when connecting).
    fn pnn(&self) -> u32;

    /// The timeout for every control sent from now on.
    fn set_timeout(&mut self, timeout: Duration);

    /// Sends `request` to each node of `pnns` (all before waiting) and waits for every reply
    /// or timeout.
    fn control_multi(
        &mut self,
        pnns: &[u32],
        request: &Request,
    ) -> Result<MultiOutcome, Disconnected>;

    /// Sends one control and, until its reply arrives, hands every message for `srvid` to
    /// `sink` (the records of a DB_PULL arrive that way, before its reply).
    fn control_collecting(
        &mut self,
        pnn: u32,
        request: &Request,
        srvid: u64,
        sink: &mut dyn FnMut(Payload),
    ) -> Result<Outcome, Disconnected>;

    /// Sends every control of `requests` (all before waiting) and, until all have replied or
    /// timed out, hands every message for `srvids[i]` to `sink(i, message)`: the records of
    /// several DB_PULLs arriving interleaved. Returns the outcomes in the order of
    /// `requests`. The default runs the controls one after the other.
    fn controls_collecting(
        &mut self,
        requests: &[(u32, Request)],
        srvids: &[u64],
        sink: &mut dyn FnMut(usize, Payload),
    ) -> Result<Vec<Outcome>, Disconnected> {
        let mut outcomes = Vec::with_capacity(requests.len());
        for (index, ((pnn, request), srvid)) in requests.iter().zip(srvids).enumerate() {
            outcomes.push(
                self.control_collecting(*pnn, request, *srvid, &mut |data| sink(index, data))?,
            );
        }
        Ok(outcomes)
    }

    /// Sends a message to `srvid` on each node of `pnns` (through the local daemon).
    fn message_multi(&mut self, pnns: &[u32], srvid: u64, data: &[u8]) -> Result<(), Disconnected>;

    /// Sends a message to `srvid` on node `pnn`, built in `data` (the connection may turn the
    /// buffer into the frame instead of copying it).
    fn message_to(
        &mut self,
        pnn: u32,
        srvid: u64,
        data: MessageBuffer,
    ) -> Result<(), Disconnected> {
        self.message_multi(&[pnn], srvid, data.payload())
    }

    /// Sends each control to its node (all before waiting) and waits for every reply or
    /// timeout. Returns the outcomes in the order of `requests`, and the order in which they
    /// completed (indexes into `requests`). The default sends them one at a time.
    fn control_batch(
        &mut self,
        requests: &[(u32, Request)],
    ) -> Result<(Vec<Outcome>, Vec<usize>), Disconnected> {
        let mut outcomes = Vec::with_capacity(requests.len());
        for (pnn, request) in requests {
            outcomes.push(self.control(*pnn, request)?);
        }
        Ok((outcomes, (0..requests.len()).collect()))
    }

    /// One control to one node.
    fn control(&mut self, pnn: u32, request: &Request) -> Result<Outcome, Disconnected> {
        let mut multi = self.control_multi(&[pnn], request)?;
        Ok(multi.outcomes.pop().unwrap_or(Err(libc::EIO)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: i32) -> Outcome {
        Ok(ReplyControl {
            status,
            data: Vec::new(),
            errmsg: Vec::new(),
        })
    }

    #[test]
    fn first_failure_follows_arrival_order() {
        let multi = MultiOutcome::from_arrivals(
            vec![reply(0), reply(-1), Err(libc::ETIMEDOUT)],
            &[0, 1, 2],
        );
        assert_eq!(multi.error(), Some((-1, 1)));
        let multi = MultiOutcome::from_arrivals(
            vec![reply(0), reply(-1), Err(libc::ETIMEDOUT)],
            &[2, 0, 1],
        );
        assert_eq!(multi.error(), Some((libc::ETIMEDOUT, 2)));
        assert!(multi.into_replies().is_none());
        let ok = MultiOutcome::from_arrivals(vec![reply(0), reply(0)], &[1, 0]);
        assert_eq!(ok.error(), None);
        assert_eq!(ok.into_replies().map(|r| r.len()), Some(2));
    }
}
