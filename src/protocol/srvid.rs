//! Message service ids and the payloads that travel to them (mirrors the `CTDB_SRVID_*`
//! constants of `ctdb/protocol/protocol.h`, Samba's `source3/include/ctdb_srvids.h`, and
//! `ctdb/protocol/protocol_message.c`).
//!
//! A REQ_MESSAGE carries a srvid and opaque bytes; the srvid alone decides what the bytes are.
//! [`MessageData`] makes that mapping explicit, keyed the same way as `ctdb_message_data_pull`,
//! with raw bytes for every srvid that has no fixed payload (pid srvids, Samba's, private ones).
//!
//! Like the C parsers, pulls are lenient about trailing bytes after a complete payload; only
//! the consumers decide whether a payload must have an exact size (the recovery daemon insists
//! on 24-byte disable messages, for instance).

use super::basic::{Marshal, PullError, Reader, Writer};

/// Catches every message (`CTDB_SRVID_ALL`).
pub const ALL: u64 = u64::MAX;
/// Base of the private srvids the recovery helper uses for pulling and pushing databases.
pub const RECOVERY: u64 = 0xF001_0000_0000_0000;
/// Ban credits for a node (payload: u32 pnn).
pub const BANNING: u64 = 0xF002_0000_0000_0000;
/// Leader election data (payload: [`ElectionMessage`]).
pub const ELECTION: u64 = 0xF100_0000_0000_0000;
/// Leader broadcast (payload: u32 pnn, `UNKNOWN_PNN` while unknown).
pub const LEADER: u64 = 0xF101_0000_0000_0000;
/// The cluster has been reconfigured (no payload).
pub const RECONFIGURE: u64 = 0xF200_0000_0000_0000;
/// An IP address was released (payload: NUL-terminated address string).
pub const RELEASE_IP: u64 = 0xF300_0000_0000_0000;
/// An IP address was taken over (payload: NUL-terminated address string).
pub const TAKE_IP: u64 = 0xF301_0000_0000_0000;
/// Obsolete: node flags for the recovery daemon (payload: node flag change).
pub const SET_NODE_FLAGS: u64 = 0xF400_0000_0000_0000;
/// Update a public IP assignment (payload: public ip); unused by the 4.17 daemon.
pub const RECD_UPDATE_IP: u64 = 0xF500_0000_0000_0000;
/// Migrate a set of records (payload: record buffer); replaced by the VACUUM_FETCH control.
pub const VACUUM_FETCH: u64 = 0xF700_0000_0000_0000;
/// Detach a database (payload: u32 db id); unused by the 4.17 daemon.
pub const DETACH_DATABASE: u64 = 0xF701_0000_0000_0000;
/// Dump talloc memory use (payload: [`SrvidMessage`] naming where to reply).
pub const MEM_DUMP: u64 = 0xF800_0000_0000_0000;
/// Unused.
pub const GETLOG: u64 = 0xF801_0000_0000_0000;
/// Unused.
pub const CLEARLOG: u64 = 0xF802_0000_0000_0000;
/// Push node flags to the other nodes (payload: node flag change).
pub const PUSH_NODE_FLAGS: u64 = 0xF900_0000_0000_0000;
/// Reload the nodes file (no payload).
pub const RELOAD_NODES: u64 = 0xFA00_0000_0000_0000;
/// Run an IP takeover run (payload: [`SrvidMessage`]; srvid 0 means no reply).
pub const TAKEOVER_RUN: u64 = 0xFB00_0000_0000_0000;
/// Rebalance IPs onto a node at the next takeover run (payload: u32 pnn).
pub const REBALANCE_NODE: u64 = 0xFB01_0000_0000_0000;
/// Stop takeover runs for a while (payload: [`DisableMessage`]).
pub const DISABLE_TAKEOVER_RUNS: u64 = 0xFB03_0000_0000_0000;
/// Stop recoveries for a while (payload: [`DisableMessage`]).
pub const DISABLE_RECOVERIES: u64 = 0xFB04_0000_0000_0000;
/// Legacy: disable IP checks (payload: u32 timeout).
pub const DISABLE_IP_CHECK: u64 = 0xFC00_0000_0000_0000;
/// ctdb-rs only, never on the wire: ctdbd tells its own recovery daemon that a node's link came
/// up or went down (payload: the PNN), so that the main loop looks at the node map at once
/// instead of at its next once-a-second pass. Inside CTDB's reserved range, unused by 4.17.
pub const CTDB_RS_LINK_CHANGE: u64 = 0xF0E0_0000_0000_0000;
/// ctdb-rs only, never on the wire: a client (such as `ctdb recover`) set this node's recovery
/// mode to ACTIVE; ctdbd tells its own recovery daemon, which, when it leads, runs its main loop
/// at once instead of at its next once-a-second pass. No payload.
pub const CTDB_RS_RECMODE_ACTIVE: u64 = 0xF0E0_0000_0000_0001;

/// The top 8 bits select a reserved range.
pub const RANGE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Processes register their pid as a srvid in this range.
pub const PID_RANGE: u64 = 0x0000_0000_0000_0000;
/// Samba's range.
pub const SAMBA_RANGE: u64 = 0xFE00_0000_0000_0000;
/// smbd's notify srvid (the base of Samba's range).
pub const SAMBA_NOTIFY: u64 = 0xFE00_0000_0000_0000;
/// Reserved for a CTDB NFS server.
pub const NFSD_RANGE: u64 = 0xEE00_0000_0000_0000;
/// Reserved for a CTDB iSCSI server.
pub const ISCSID_RANGE: u64 = 0xDE00_0000_0000_0000;
/// Reserved for the ctdb tool.
pub const TOOL_RANGE: u64 = 0xCE00_0000_0000_0000;
/// Reserved for client code.
pub const CLIENT_RANGE: u64 = 0xBE00_0000_0000_0000;
/// Reserved for test programs.
pub const TEST_RANGE: u64 = 0xAE00_0000_0000_0000;

/// Samba: notify proxy (`source3/include/ctdb_srvids.h`).
pub const SAMBA_NOTIFY_PROXY: u64 = 0xFE00_0000_0000_0001;
/// Samba: messages to all smbd processes (`message_send_all`).
pub const SAMBA_PROCESS: u64 = 0xFE00_0000_0000_0002;

/// The range a srvid belongs to (its top 8 bits).
pub fn range_of(srvid: u64) -> u64 {
    srvid & RANGE_MASK
}

/// The C name of a well-known srvid, for logs.
pub fn name(srvid: u64) -> Option<&'static str> {
    Some(match srvid {
        ALL => "ALL",
        RECOVERY => "RECOVERY",
        BANNING => "BANNING",
        ELECTION => "ELECTION",
        LEADER => "LEADER",
        RECONFIGURE => "RECONFIGURE",
        RELEASE_IP => "RELEASE_IP",
        TAKE_IP => "TAKE_IP",
        SET_NODE_FLAGS => "SET_NODE_FLAGS",
        RECD_UPDATE_IP => "RECD_UPDATE_IP",
        VACUUM_FETCH => "VACUUM_FETCH",
        DETACH_DATABASE => "DETACH_DATABASE",
        MEM_DUMP => "MEM_DUMP",
        GETLOG => "GETLOG",
        CLEARLOG => "CLEARLOG",
        PUSH_NODE_FLAGS => "PUSH_NODE_FLAGS",
        RELOAD_NODES => "RELOAD_NODES",
        TAKEOVER_RUN => "TAKEOVER_RUN",
        REBALANCE_NODE => "REBALANCE_NODE",
        DISABLE_TAKEOVER_RUNS => "DISABLE_TAKEOVER_RUNS",
        DISABLE_RECOVERIES => "DISABLE_RECOVERIES",
        DISABLE_IP_CHECK => "DISABLE_IP_CHECK",
        SAMBA_NOTIFY => "SAMBA_NOTIFY",
        SAMBA_NOTIFY_PROXY => "SAMBA_NOTIFY_PROXY",
        SAMBA_PROCESS => "SAMBA_PROCESS",
        _ => return None,
    })
}

// The message bodies that are also control payloads live with the other payload types.
pub use super::types::{DisableMessage, ElectionMessage, SrvidMessage};

/// A REQ_MESSAGE payload, decoded according to its srvid (`union ctdb_message_data`).
///
/// Node flag changes, public IPs and record buffers are shared with controls and live with
/// the control payload types; their variants here carry the raw payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageData {
    Banning {
        pnn: u32,
    },
    Election(ElectionMessage),
    Leader {
        pnn: u32,
    },
    Reconfigure,
    /// The address string without its NUL; `None` for an empty payload.
    ReleaseIp(Option<String>),
    /// The address string without its NUL; `None` for an empty payload.
    TakeIp(Option<String>),
    /// Raw `ctdb_node_flag_change` (12 bytes).
    SetNodeFlags(Vec<u8>),
    /// Raw `ctdb_public_ip` (32 bytes).
    RecdUpdateIp(Vec<u8>),
    /// Raw `ctdb_rec_buffer`.
    VacuumFetch(Vec<u8>),
    DetachDatabase {
        db_id: u32,
    },
    MemDump(SrvidMessage),
    Getlog,
    Clearlog,
    /// Raw `ctdb_node_flag_change` (12 bytes).
    PushNodeFlags(Vec<u8>),
    ReloadNodes,
    TakeoverRun(SrvidMessage),
    RebalanceNode {
        pnn: u32,
    },
    DisableTakeoverRuns(DisableMessage),
    DisableRecoveries(DisableMessage),
    DisableIpCheck {
        timeout: u32,
    },
    /// Any other srvid: the bytes as sent.
    Data(Vec<u8>),
}

fn pull_fixed<T: Marshal>(data: &[u8]) -> Result<T, PullError> {
    T::pull(data).map(|(value, _)| value)
}

fn pull_u32(data: &[u8]) -> Result<u32, PullError> {
    Reader::new(data).u32()
}

/// `ctdb_string_pull`: no bytes is no string; otherwise everything up to the first NUL.
fn pull_ip_string(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let text = data.split(|&b| b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).into_owned())
}

fn ip_string_len(ip: Option<&String>) -> usize {
    ip.map_or(0, |s| s.len() + 1)
}

impl MessageData {
    /// Decodes `data`, the payload of a message sent to `srvid`.
    pub fn pull(srvid: u64, data: &[u8]) -> Result<MessageData, PullError> {
        Ok(match srvid {
            BANNING => MessageData::Banning {
                pnn: pull_u32(data)?,
            },
            ELECTION => MessageData::Election(pull_fixed(data)?),
            LEADER => MessageData::Leader {
                pnn: pull_u32(data)?,
            },
            RECONFIGURE => MessageData::Reconfigure,
            RELEASE_IP => MessageData::ReleaseIp(pull_ip_string(data)),
            TAKE_IP => MessageData::TakeIp(pull_ip_string(data)),
            SET_NODE_FLAGS => MessageData::SetNodeFlags(data.to_vec()),
            RECD_UPDATE_IP => MessageData::RecdUpdateIp(data.to_vec()),
            VACUUM_FETCH => MessageData::VacuumFetch(data.to_vec()),
            DETACH_DATABASE => MessageData::DetachDatabase {
                db_id: pull_u32(data)?,
            },
            MEM_DUMP => MessageData::MemDump(pull_fixed(data)?),
            GETLOG => MessageData::Getlog,
            CLEARLOG => MessageData::Clearlog,
            PUSH_NODE_FLAGS => MessageData::PushNodeFlags(data.to_vec()),
            RELOAD_NODES => MessageData::ReloadNodes,
            TAKEOVER_RUN => MessageData::TakeoverRun(pull_fixed(data)?),
            REBALANCE_NODE => MessageData::RebalanceNode {
                pnn: pull_u32(data)?,
            },
            DISABLE_TAKEOVER_RUNS => MessageData::DisableTakeoverRuns(pull_fixed(data)?),
            DISABLE_RECOVERIES => MessageData::DisableRecoveries(pull_fixed(data)?),
            DISABLE_IP_CHECK => MessageData::DisableIpCheck {
                timeout: pull_u32(data)?,
            },
            _ => MessageData::Data(data.to_vec()),
        })
    }

    /// The srvid this payload belongs to; `None` for [`MessageData::Data`], which fits any.
    pub fn srvid(&self) -> Option<u64> {
        Some(match self {
            MessageData::Banning { .. } => BANNING,
            MessageData::Election(_) => ELECTION,
            MessageData::Leader { .. } => LEADER,
            MessageData::Reconfigure => RECONFIGURE,
            MessageData::ReleaseIp(_) => RELEASE_IP,
            MessageData::TakeIp(_) => TAKE_IP,
            MessageData::SetNodeFlags(_) => SET_NODE_FLAGS,
            MessageData::RecdUpdateIp(_) => RECD_UPDATE_IP,
            MessageData::VacuumFetch(_) => VACUUM_FETCH,
            MessageData::DetachDatabase { .. } => DETACH_DATABASE,
            MessageData::MemDump(_) => MEM_DUMP,
            MessageData::Getlog => GETLOG,
            MessageData::Clearlog => CLEARLOG,
            MessageData::PushNodeFlags(_) => PUSH_NODE_FLAGS,
            MessageData::ReloadNodes => RELOAD_NODES,
            MessageData::TakeoverRun(_) => TAKEOVER_RUN,
            MessageData::RebalanceNode { .. } => REBALANCE_NODE,
            MessageData::DisableTakeoverRuns(_) => DISABLE_TAKEOVER_RUNS,
            MessageData::DisableRecoveries(_) => DISABLE_RECOVERIES,
            MessageData::DisableIpCheck { .. } => DISABLE_IP_CHECK,
            MessageData::Data(_) => return None,
        })
    }

    /// Bytes [`MessageData::push`] appends (the message's `datalen`).
    pub fn wire_len(&self) -> usize {
        match self {
            MessageData::Banning { .. }
            | MessageData::Leader { .. }
            | MessageData::DetachDatabase { .. }
            | MessageData::RebalanceNode { .. }
            | MessageData::DisableIpCheck { .. } => 4,
            MessageData::Election(m) => m.wire_len(),
            MessageData::MemDump(m) | MessageData::TakeoverRun(m) => m.wire_len(),
            MessageData::DisableTakeoverRuns(m) | MessageData::DisableRecoveries(m) => m.wire_len(),
            MessageData::Reconfigure
            | MessageData::Getlog
            | MessageData::Clearlog
            | MessageData::ReloadNodes => 0,
            MessageData::ReleaseIp(ip) | MessageData::TakeIp(ip) => ip_string_len(ip.as_ref()),
            MessageData::SetNodeFlags(raw)
            | MessageData::RecdUpdateIp(raw)
            | MessageData::VacuumFetch(raw)
            | MessageData::PushNodeFlags(raw)
            | MessageData::Data(raw) => raw.len(),
        }
    }

    /// Appends the payload.
    pub fn push(&self, out: &mut Vec<u8>) {
        match self {
            MessageData::Banning { pnn }
            | MessageData::Leader { pnn }
            | MessageData::RebalanceNode { pnn } => out.put_u32(*pnn),
            MessageData::DetachDatabase { db_id } => out.put_u32(*db_id),
            MessageData::DisableIpCheck { timeout } => out.put_u32(*timeout),
            MessageData::Election(m) => m.push(out),
            MessageData::MemDump(m) | MessageData::TakeoverRun(m) => m.push(out),
            MessageData::DisableTakeoverRuns(m) | MessageData::DisableRecoveries(m) => m.push(out),
            MessageData::Reconfigure
            | MessageData::Getlog
            | MessageData::Clearlog
            | MessageData::ReloadNodes => {}
            MessageData::ReleaseIp(ip) | MessageData::TakeIp(ip) => {
                if let Some(ip) = ip {
                    out.put_bytes(ip.as_bytes());
                    out.put_u8(0);
                }
            }
            MessageData::SetNodeFlags(raw)
            | MessageData::RecdUpdateIp(raw)
            | MessageData::VacuumFetch(raw)
            | MessageData::PushNodeFlags(raw)
            | MessageData::Data(raw) => out.put_bytes(raw),
        }
    }

    /// The payload as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        self.push(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Timeval;
    use crate::testing::{seeds, Prng};

    fn round_trip<T: Marshal + PartialEq + std::fmt::Debug>(value: &T, seed: u64) {
        let bytes = value.to_bytes();
        assert_eq!(bytes.len(), value.wire_len(), "seed {seed} {value:?}");
        let (back, used) = T::pull(&bytes).unwrap();
        assert_eq!(&back, value, "seed {seed}");
        assert_eq!(used, bytes.len(), "seed {seed}");
        for cut in 0..bytes.len() {
            assert!(T::pull(&bytes[..cut]).is_err(), "seed {seed} cut {cut}");
        }
    }

    fn random_election(prng: &mut Prng) -> ElectionMessage {
        ElectionMessage {
            num_connected: prng.u32(),
            priority_time: Timeval {
                tv_sec: prng.i64(),
                tv_usec: prng.i64(),
            },
            pnn: prng.u32(),
            node_flags: prng.u32(),
        }
    }

    fn random_srvid_message(prng: &mut Prng) -> SrvidMessage {
        SrvidMessage {
            pnn: prng.u32(),
            srvid: prng.next_u64(),
        }
    }

    fn random_disable(prng: &mut Prng) -> DisableMessage {
        DisableMessage {
            pnn: prng.u32(),
            srvid: prng.next_u64(),
            timeout: prng.u32(),
        }
    }

    #[test]
    fn fixed_messages_round_trip() {
        for seed in seeds(1000) {
            let mut prng = Prng::new(seed);
            round_trip(&random_election(&mut prng), seed);
            round_trip(&random_srvid_message(&mut prng), seed);
            round_trip(&random_disable(&mut prng), seed);
        }
    }

    #[test]
    fn fixed_message_layouts_match_c() {
        let election = ElectionMessage {
            num_connected: 2,
            priority_time: Timeval {
                tv_sec: 3,
                tv_usec: 4,
            },
            pnn: 5,
            node_flags: 6,
        }
        .to_bytes();
        assert_eq!(election.len(), 32);
        assert_eq!(&election[0..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(election[8], 3);
        assert_eq!(election[16], 4);
        assert_eq!(&election[24..32], &[5, 0, 0, 0, 6, 0, 0, 0]);

        let disable = DisableMessage {
            pnn: 1,
            srvid: 0x0102_0304_0506_0708,
            timeout: 60,
        }
        .to_bytes();
        assert_eq!(
            disable,
            [1, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 60, 0, 0, 0, 0, 0, 0, 0]
        );
        let srvid = SrvidMessage { pnn: 7, srvid: 0 }.to_bytes();
        assert_eq!(srvid, [7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    fn random_message_data(prng: &mut Prng) -> MessageData {
        let ip = |prng: &mut Prng| prng.bool().then(|| prng.string(39));
        match prng.below(22) {
            0 => MessageData::Banning { pnn: prng.u32() },
            1 => MessageData::Election(random_election(prng)),
            2 => MessageData::Leader { pnn: prng.u32() },
            3 => MessageData::Reconfigure,
            4 => MessageData::ReleaseIp(ip(prng)),
            5 => MessageData::TakeIp(ip(prng)),
            6 => MessageData::SetNodeFlags(prng.bytes(12)),
            7 => MessageData::RecdUpdateIp(prng.bytes(32)),
            8 => MessageData::VacuumFetch(prng.bytes(64)),
            9 => MessageData::DetachDatabase { db_id: prng.u32() },
            10 => MessageData::MemDump(random_srvid_message(prng)),
            11 => MessageData::Getlog,
            12 => MessageData::Clearlog,
            13 => MessageData::PushNodeFlags(prng.bytes(12)),
            14 => MessageData::ReloadNodes,
            15 => MessageData::TakeoverRun(random_srvid_message(prng)),
            16 => MessageData::RebalanceNode { pnn: prng.u32() },
            17 => MessageData::DisableTakeoverRuns(random_disable(prng)),
            18 => MessageData::DisableRecoveries(random_disable(prng)),
            19 => MessageData::DisableIpCheck {
                timeout: prng.u32(),
            },
            _ => MessageData::Data(prng.bytes(64)),
        }
    }

    #[test]
    fn message_data_round_trips_by_srvid() {
        for seed in seeds(1000) {
            let mut prng = Prng::new(seed);
            let value = random_message_data(&mut prng);
            let srvid = value
                .srvid()
                .unwrap_or_else(|| prng.next_u64() & 0x00FF_FFFF_FFFF_FFFF);
            let bytes = value.to_bytes();
            assert_eq!(bytes.len(), value.wire_len(), "seed {seed} {value:?}");
            assert_eq!(
                MessageData::pull(srvid, &bytes).unwrap(),
                value,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn short_fixed_payloads_are_rejected() {
        for srvid in [
            BANNING,
            ELECTION,
            LEADER,
            DETACH_DATABASE,
            MEM_DUMP,
            TAKEOVER_RUN,
            REBALANCE_NODE,
            DISABLE_TAKEOVER_RUNS,
            DISABLE_RECOVERIES,
            DISABLE_IP_CHECK,
        ] {
            assert!(MessageData::pull(srvid, &[1, 2, 3]).is_err(), "{srvid:#x}");
        }
        assert!(MessageData::pull(DISABLE_RECOVERIES, &[0; 20]).is_err());
        assert_eq!(
            MessageData::pull(RELEASE_IP, b"10.0.0.1\0").unwrap(),
            MessageData::ReleaseIp(Some("10.0.0.1".into()))
        );
        assert_eq!(
            MessageData::pull(TAKE_IP, b"").unwrap(),
            MessageData::TakeIp(None)
        );
        // Trailing bytes after a complete payload are ignored, as in C.
        assert_eq!(
            MessageData::pull(LEADER, &[1, 0, 0, 0, 9, 9]).unwrap(),
            MessageData::Leader { pnn: 1 }
        );
    }

    #[test]
    fn random_payloads_never_panic() {
        for seed in seeds(2000) {
            let mut prng = Prng::new(seed);
            let srvid = match prng.below(3) {
                0 => prng.next_u64(),
                _ => [
                    ELECTION,
                    DISABLE_TAKEOVER_RUNS,
                    TAKEOVER_RUN,
                    RELEASE_IP,
                    LEADER,
                ][prng.below(5) as usize],
            };
            let data = prng.bytes(40);
            let _ = MessageData::pull(srvid, &data);
        }
    }

    #[test]
    fn names_and_ranges() {
        assert_eq!(name(LEADER), Some("LEADER"));
        assert_eq!(name(SAMBA_PROCESS), Some("SAMBA_PROCESS"));
        assert_eq!(name(12345), None);
        assert_eq!(range_of(SAMBA_PROCESS), SAMBA_RANGE);
        assert_eq!(range_of(4242), PID_RANGE);
        assert_eq!(RECOVERY | 3, 0xF001_0000_0000_0003);
    }
}
