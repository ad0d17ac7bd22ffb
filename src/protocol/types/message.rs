//! Message bodies defined alongside the control payloads in `protocol_types.c`: election,
//! srvid (reply address) and disable messages. Each has alignment holes that are zero on output
//! and ignored on input.

use crate::protocol::basic::{Marshal, PullError, Reader, Timeval, Writer};

use super::pull_item;

/// `ctdb_election_message` (32 bytes), sent to `CTDB_SRVID_ELECTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ElectionMessage {
    pub num_connected: u32,
    pub priority_time: Timeval,
    pub pnn: u32,
    pub node_flags: u32,
}

impl Marshal for ElectionMessage {
    fn wire_len(&self) -> usize {
        32
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.num_connected);
        out.put_zeros(4);
        self.priority_time.push(out);
        out.put_u32(self.pnn);
        out.put_u32(self.node_flags);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num_connected = r.u32()?;
        r.skip(4)?;
        let value = ElectionMessage {
            num_connected,
            priority_time: pull_item(&mut r)?,
            pnn: r.u32()?,
            node_flags: r.u32()?,
        };
        Ok((value, r.pos()))
    }
}

/// `ctdb_srvid_message` (16 bytes): where to send a reply (`srvid` 0 = no reply wanted). Used by
/// MEM_DUMP and TAKEOVER_RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SrvidMessage {
    pub pnn: u32,
    pub srvid: u64,
}

impl Marshal for SrvidMessage {
    fn wire_len(&self) -> usize {
        16
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.pnn);
        out.put_zeros(4);
        out.put_u64(self.srvid);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let pnn = r.u32()?;
        r.skip(4)?;
        let srvid = r.u64()?;
        Ok((SrvidMessage { pnn, srvid }, r.pos()))
    }
}

/// `ctdb_disable_message` (24 bytes): DISABLE_TAKEOVER_RUNS and DISABLE_RECOVERIES. `timeout`
/// 0 re-enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DisableMessage {
    pub pnn: u32,
    pub srvid: u64,
    pub timeout: u32,
}

impl Marshal for DisableMessage {
    fn wire_len(&self) -> usize {
        24
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.pnn);
        out.put_zeros(4);
        out.put_u64(self.srvid);
        out.put_u32(self.timeout);
        out.put_zeros(4);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let pnn = r.u32()?;
        r.skip(4)?;
        let srvid = r.u64()?;
        let timeout = r.u32()?;
        r.skip(4)?;
        Ok((
            DisableMessage {
                pnn,
                srvid,
                timeout,
            },
            r.pos(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::check::all_seeds;
    use crate::protocol::types::fill;

    #[test]
    fn seeded_round_trips_and_truncations() {
        all_seeds("ElectionMessage", fill::election_message);
        all_seeds("SrvidMessage", fill::srvid_message);
        all_seeds("DisableMessage", fill::disable_message);
    }

    #[test]
    fn layouts() {
        let e = ElectionMessage {
            num_connected: 2,
            priority_time: Timeval {
                tv_sec: 5,
                tv_usec: 6,
            },
            pnn: 1,
            node_flags: 0x20,
        };
        let b = e.to_bytes();
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &5i64.to_ne_bytes());
        assert_eq!(&b[24..28], &1u32.to_ne_bytes());
        assert_eq!(&b[28..32], &0x20u32.to_ne_bytes());
        let d = DisableMessage {
            pnn: 1,
            srvid: 2,
            timeout: 60,
        }
        .to_bytes();
        assert_eq!(&d[8..16], &2u64.to_ne_bytes());
        assert_eq!(&d[16..20], &60u32.to_ne_bytes());
        assert_eq!(d.len(), 24);
    }
}
