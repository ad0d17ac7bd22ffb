//! Tunable payloads: SET_TUNABLE, GET_ALL_TUNABLES and LIST_TUNABLES.

use crate::protocol::basic::{push_cstring, push_stringn, stringn_len, Marshal, PullError};
use crate::protocol::basic::{Reader, Writer};

use super::{pull_stringn_lenient, text_until_nul};

/// `ctdb_tunable` as SET_TUNABLE sends it: `value`, then the name as a u32 length (NUL
/// included) and the bytes. A zero length (stock's NULL name, which the daemon rejects) pulls
/// as the empty name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tunable {
    pub value: u32,
    pub name: String,
}

impl Marshal for Tunable {
    fn wire_len(&self) -> usize {
        4 + stringn_len(Some(&self.name))
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.value);
        push_stringn(out, Some(&self.name));
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let value = r.u32()?;
        let name = pull_stringn_lenient(&mut r)?.unwrap_or_default();
        Ok((Tunable { value, name }, r.pos()))
    }
}

/// `ctdb_var_list` as LIST_TUNABLES carries it: a u32 length (NUL included) and one string of
/// names separated by `':'`.
///
/// The stock daemon's string starts with a colon (`":SeqnumInterval:ControlTimeout:…"`) while
/// the protocol library writes none; readers split on `':'` and drop empty pieces. The text is
/// kept verbatim so that both forms re-encode exactly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VarList {
    pub text: String,
}

impl VarList {
    /// The list the way the stock daemon writes it: every name preceded by `':'`.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        let mut text = String::new();
        for name in names {
            text.push(':');
            text.push_str(name.as_ref());
        }
        VarList { text }
    }

    /// The names, as `strtok_r(…, ":")` yields them.
    pub fn names(&self) -> Vec<&str> {
        self.text.split(':').filter(|s| !s.is_empty()).collect()
    }
}

impl Marshal for VarList {
    fn wire_len(&self) -> usize {
        4 + self.text.len() + 1
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_len(self.text.len() + 1);
        push_cstring(out, &self.text);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let len = r.len_u32("var_list length")?;
        let text = text_until_nul(r.bytes(len)?);
        Ok((VarList { text }, r.pos()))
    }
}

/// Number of `u32` fields of `ctdb_tunable_list`.
pub const TUNABLE_COUNT: usize = 62;

/// Declares [`TunableList`] from one table: field name and stock tunable name, in wire order.
macro_rules! tunable_list {
    ( $( $field:ident => $name:literal ),+ $(,)? ) => {
        /// `ctdb_tunable_list` (248 bytes): every tunable as a `u32`, in the struct's order
        /// (the GET_ALL_TUNABLES reply). This order differs slightly from LIST_TUNABLES'.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct TunableList {
            $( pub $field: u32, )+
        }

        impl TunableList {
            /// The stock tunable name of each field, in wire order (obsolete ones included).
            pub const NAMES: [&'static str; TUNABLE_COUNT] = [ $( $name, )+ ];

            /// The fields in wire order.
            pub fn to_array(&self) -> [u32; TUNABLE_COUNT] {
                [ $( self.$field, )+ ]
            }

            pub fn from_array(values: [u32; TUNABLE_COUNT]) -> Self {
                let [ $( $field, )+ ] = values;
                TunableList { $( $field, )+ }
            }
        }
    };
}

tunable_list! {
    max_redirect_count => "MaxRedirectCount",
    seqnum_interval => "SeqnumInterval",
    control_timeout => "ControlTimeout",
    traverse_timeout => "TraverseTimeout",
    keepalive_interval => "KeepaliveInterval",
    keepalive_limit => "KeepaliveLimit",
    recover_timeout => "RecoverTimeout",
    recover_interval => "RecoverInterval",
    election_timeout => "ElectionTimeout",
    takeover_timeout => "TakeoverTimeout",
    monitor_interval => "MonitorInterval",
    tickle_update_interval => "TickleUpdateInterval",
    script_timeout => "EventScriptTimeout",
    monitor_timeout_count => "MonitorTimeoutCount",
    script_unhealthy_on_timeout => "EventScriptUnhealthyOnTimeout",
    recovery_grace_period => "RecoveryGracePeriod",
    recovery_ban_period => "RecoveryBanPeriod",
    database_hash_size => "DatabaseHashSize",
    database_max_dead => "DatabaseMaxDead",
    rerecovery_timeout => "RerecoveryTimeout",
    enable_bans => "EnableBans",
    deterministic_public_ips => "DeterministicIPs",
    reclock_ping_period => "ReclockPingPeriod",
    no_ip_failback => "NoIPFailback",
    disable_ip_failover => "DisableIPFailover",
    verbose_memory_names => "VerboseMemoryNames",
    recd_ping_timeout => "RecdPingTimeout",
    recd_ping_failcount => "RecdFailCount",
    log_latency_ms => "LogLatencyMs",
    reclock_latency_ms => "RecLockLatencyMs",
    recovery_drop_all_ips => "RecoveryDropAllIPs",
    verify_recovery_lock => "VerifyRecoveryLock",
    vacuum_interval => "VacuumInterval",
    vacuum_max_run_time => "VacuumMaxRunTime",
    repack_limit => "RepackLimit",
    vacuum_limit => "VacuumLimit",
    max_queue_depth_drop_msg => "MaxQueueDropMsg",
    allow_unhealthy_db_read => "AllowUnhealthyDBRead",
    stat_history_interval => "StatHistoryInterval",
    deferred_attach_timeout => "DeferredAttachTO",
    vacuum_fast_path_count => "VacuumFastPathCount",
    lcp2_public_ip_assignment => "LCP2PublicIPs",
    allow_client_db_attach => "AllowClientDBAttach",
    recover_pdb_by_seqnum => "RecoverPDBBySeqNum",
    deferred_rebalance_on_node_add => "DeferredRebalanceOnNodeAdd",
    fetch_collapse => "FetchCollapse",
    hopcount_make_sticky => "HopcountMakeSticky",
    sticky_duration => "StickyDuration",
    sticky_pindown => "StickyPindown",
    no_ip_takeover => "NoIPTakeover",
    db_record_count_warn => "DBRecordCountWarn",
    db_record_size_warn => "DBRecordSizeWarn",
    db_size_warn => "DBSizeWarn",
    pulldb_preallocation_size => "PullDBPreallocation",
    no_ip_host_on_all_disabled => "NoIPHostOnAllDisabled",
    samba3_hack => "Samba3AvoidDeadlocks",
    mutex_enabled => "TDBMutexEnabled",
    lock_processes_per_db => "LockProcessesPerDB",
    rec_buffer_size_limit => "RecBufferSizeLimit",
    queue_buffer_size => "QueueBufferSize",
    ip_alloc_algorithm => "IPAllocAlgorithm",
    allow_mixed_versions => "AllowMixedVersions",
}

impl Marshal for TunableList {
    fn wire_len(&self) -> usize {
        4 * TUNABLE_COUNT
    }
    fn push(&self, out: &mut Vec<u8>) {
        for value in self.to_array() {
            out.put_u32(value);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let mut values = [0u32; TUNABLE_COUNT];
        for value in &mut values {
            *value = r.u32()?;
        }
        Ok((TunableList::from_array(values), r.pos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::check::all_seeds;
    use crate::protocol::types::fill;

    #[test]
    fn seeded_round_trips_and_truncations() {
        all_seeds("Tunable", fill::tunable);
        all_seeds("VarList", fill::var_list);
        all_seeds("TunableList", fill::tunable_list);
    }

    #[test]
    fn tunable_list_order_matches_the_c_struct() {
        let mut t = TunableList {
            recover_timeout: 30,
            allow_mixed_versions: 1,
            ..TunableList::default()
        };
        t.vacuum_fast_path_count = 60;
        let b = t.to_bytes();
        assert_eq!(b.len(), 248);
        assert_eq!(&b[24..28], &30u32.to_ne_bytes());
        assert_eq!(&b[160..164], &60u32.to_ne_bytes());
        assert_eq!(&b[244..248], &1u32.to_ne_bytes());
        assert_eq!(TunableList::NAMES[6], "RecoverTimeout");
        assert_eq!(TunableList::NAMES[40], "VacuumFastPathCount");
        assert_eq!(TunableList::NAMES[61], "AllowMixedVersions");
    }

    #[test]
    fn set_tunable_layout() {
        let t = Tunable {
            value: 30,
            name: "RecoverTimeout".into(),
        };
        let b = t.to_bytes();
        assert_eq!(&b[0..4], &30u32.to_ne_bytes());
        assert_eq!(&b[4..8], &15u32.to_ne_bytes());
        assert_eq!(&b[8..], b"RecoverTimeout\0");
    }

    #[test]
    fn var_list_keeps_the_daemons_leading_colon() {
        let list = VarList::from_names(&["SeqnumInterval", "ControlTimeout"]);
        assert_eq!(list.text, ":SeqnumInterval:ControlTimeout");
        let b = list.to_bytes();
        assert_eq!(&b[0..4], &31u32.to_ne_bytes());
        assert_eq!(b.last(), Some(&0));
        let back = VarList::from_bytes_exact(&b).unwrap();
        assert_eq!(back.names(), ["SeqnumInterval", "ControlTimeout"]);
        assert_eq!(back.to_bytes(), b);
    }
}
