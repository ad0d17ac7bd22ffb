//! Control opcodes of CTDB 4.17 (`enum ctdb_controls` in `ctdb/protocol/protocol.h`).
//!
//! Unknown values survive as [`ControlOpcode::Unknown`] so that a daemon can answer them the way
//! stock does (status -1, no data) instead of failing to parse the packet.

/// Generates a `u32`-backed enum that keeps unknown values, with both conversions and the C name.
#[macro_export]
macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr => $cname:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this build does not know; kept verbatim.
            Unknown(u32),
        }

        impl From<u32> for $name {
            fn from(value: u32) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> u32 {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl $name {
            /// Every known value, in numeric order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The name stock CTDB uses for this value (`"UNKNOWN"` for unknown values).
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $cname, )+
                    $name::Unknown(_) => "UNKNOWN",
                }
            }
        }
    };
}

enum_with_unknown! {
    /// A control opcode (`CTDB_CONTROL_*`).
    pub enum ControlOpcode {
        ProcessExists = 0 => "PROCESS_EXISTS",
        Statistics = 1 => "STATISTICS",
        Ping = 3 => "PING",
        Getdbpath = 4 => "GETDBPATH",
        Getvnnmap = 5 => "GETVNNMAP",
        Setvnnmap = 6 => "SETVNNMAP",
        GetDebug = 7 => "GET_DEBUG",
        SetDebug = 8 => "SET_DEBUG",
        GetDbmap = 9 => "GET_DBMAP",
        GetNodemapV4 = 10 => "GET_NODEMAPv4",
        SetDmaster = 11 => "SET_DMASTER",
        PullDb = 13 => "PULL_DB",
        PushDb = 14 => "PUSH_DB",
        GetRecmode = 15 => "GET_RECMODE",
        SetRecmode = 16 => "SET_RECMODE",
        StatisticsReset = 17 => "STATISTICS_RESET",
        DbAttach = 18 => "DB_ATTACH",
        SetCall = 19 => "SET_CALL",
        TraverseStart = 20 => "TRAVERSE_START",
        TraverseAll = 21 => "TRAVERSE_ALL",
        TraverseData = 22 => "TRAVERSE_DATA",
        RegisterSrvid = 23 => "REGISTER_SRVID",
        DeregisterSrvid = 24 => "DEREGISTER_SRVID",
        GetDbname = 25 => "GET_DBNAME",
        EnableSeqnum = 26 => "ENABLE_SEQNUM",
        UpdateSeqnum = 27 => "UPDATE_SEQNUM",
        DumpMemory = 29 => "DUMP_MEMORY",
        GetPid = 30 => "GET_PID",
        GetRecmaster = 31 => "GET_RECMASTER",
        SetRecmaster = 32 => "SET_RECMASTER",
        Freeze = 33 => "FREEZE",
        Thaw = 34 => "THAW",
        GetPnn = 35 => "GET_PNN",
        Shutdown = 36 => "SHUTDOWN",
        GetMonmode = 37 => "GET_MONMODE",
        TakeoverIpV4 = 42 => "TAKEOVER_IPv4",
        ReleaseIpV4 = 43 => "RELEASE_IPv4",
        TcpClient = 44 => "TCP_CLIENT",
        TcpAdd = 45 => "TCP_ADD",
        TcpRemove = 46 => "TCP_REMOVE",
        Startup = 47 => "STARTUP",
        SetTunable = 48 => "SET_TUNABLE",
        GetTunable = 49 => "GET_TUNABLE",
        ListTunables = 50 => "LIST_TUNABLES",
        GetPublicIpsV4 = 51 => "GET_PUBLIC_IPSv4",
        ModifyFlags = 52 => "MODIFY_FLAGS",
        GetAllTunables = 53 => "GET_ALL_TUNABLES",
        KillTcp = 54 => "KILL_TCP",
        GetTcpTickleList = 55 => "GET_TCP_TICKLE_LIST",
        SetTcpTickleList = 56 => "SET_TCP_TICKLE_LIST",
        RegisterServerId = 57 => "REGISTER_SERVER_ID",
        UnregisterServerId = 58 => "UNREGISTER_SERVER_ID",
        CheckServerId = 59 => "CHECK_SERVER_ID",
        GetServerIdList = 60 => "GET_SERVER_ID_LIST",
        DbAttachPersistent = 61 => "DB_ATTACH_PERSISTENT",
        PersistentStore = 62 => "PERSISTENT_STORE",
        UpdateRecord = 63 => "UPDATE_RECORD",
        SendGratuitousArp = 64 => "SEND_GRATUITOUS_ARP",
        TransactionStart = 65 => "TRANSACTION_START",
        TransactionCommit = 66 => "TRANSACTION_COMMIT",
        WipeDatabase = 67 => "WIPE_DATABASE",
        Uptime = 69 => "UPTIME",
        StartRecovery = 70 => "START_RECOVERY",
        EndRecovery = 71 => "END_RECOVERY",
        ReloadNodesFile = 72 => "RELOAD_NODES_FILE",
        TryDeleteRecords = 74 => "TRY_DELETE_RECORDS",
        EnableMonitor = 75 => "ENABLE_MONITOR",
        DisableMonitor = 76 => "DISABLE_MONITOR",
        AddPublicIp = 77 => "ADD_PUBLIC_IP",
        DelPublicIp = 78 => "DEL_PUBLIC_IP",
        RunEventscripts = 79 => "RUN_EVENTSCRIPTS",
        GetCapabilities = 80 => "GET_CAPABILITIES",
        StartPersistentUpdate = 81 => "START_PERSISTENT_UPDATE",
        CancelPersistentUpdate = 82 => "CANCEL_PERSISTENT_UPDATE",
        Trans2Commit = 83 => "TRANS2_COMMIT",
        Trans2Finished = 84 => "TRANS2_FINISHED",
        Trans2Error = 85 => "TRANS2_ERROR",
        Trans2CommitRetry = 86 => "TRANS2_COMMIT_RETRY",
        RecdPing = 87 => "RECD_PING",
        ReleaseIp = 88 => "RELEASE_IP",
        TakeoverIp = 89 => "TAKEOVER_IP",
        GetPublicIps = 90 => "GET_PUBLIC_IPS",
        GetNodemap = 91 => "GET_NODEMAP",
        GetEventScriptStatus = 96 => "GET_EVENT_SCRIPT_STATUS",
        TraverseKill = 97 => "TRAVERSE_KILL",
        RecdReclockLatency = 98 => "RECD_RECLOCK_LATENCY",
        GetReclockFile = 99 => "GET_RECLOCK_FILE",
        SetReclockFile = 100 => "SET_RECLOCK_FILE",
        StopNode = 101 => "STOP_NODE",
        ContinueNode = 102 => "CONTINUE_NODE",
        SetNatgwstate = 103 => "SET_NATGWSTATE",
        SetLmasterrole = 104 => "SET_LMASTERROLE",
        SetRecmasterrole = 105 => "SET_RECMASTERROLE",
        EnableScript = 107 => "ENABLE_SCRIPT",
        DisableScript = 108 => "DISABLE_SCRIPT",
        SetBanState = 109 => "SET_BAN_STATE",
        GetBanState = 110 => "GET_BAN_STATE",
        SetDbPriority = 111 => "SET_DB_PRIORITY",
        GetDbPriority = 112 => "GET_DB_PRIORITY",
        TransactionCancel = 113 => "TRANSACTION_CANCEL",
        RegisterNotify = 114 => "REGISTER_NOTIFY",
        DeregisterNotify = 115 => "DEREGISTER_NOTIFY",
        Trans2Active = 116 => "TRANS2_ACTIVE",
        GetLog = 117 => "GET_LOG",
        ClearLog = 118 => "CLEAR_LOG",
        Trans3Commit = 119 => "TRANS3_COMMIT",
        GetDbSeqnum = 120 => "GET_DB_SEQNUM",
        DbSetHealthy = 121 => "DB_SET_HEALTHY",
        DbGetHealth = 122 => "DB_GET_HEALTH",
        GetPublicIpInfo = 123 => "GET_PUBLIC_IP_INFO",
        GetIfaces = 124 => "GET_IFACES",
        SetIfaceLinkState = 125 => "SET_IFACE_LINK_STATE",
        TcpAddDelayedUpdate = 126 => "TCP_ADD_DELAYED_UPDATE",
        GetStatHistory = 127 => "GET_STAT_HISTORY",
        ScheduleForDeletion = 128 => "SCHEDULE_FOR_DELETION",
        SetDbReadonly = 129 => "SET_DB_READONLY",
        CheckSrvids = 130 => "CHECK_SRVIDS",
        TraverseStartExt = 131 => "TRAVERSE_START_EXT",
        GetDbStatistics = 132 => "GET_DB_STATISTICS",
        SetDbSticky = 133 => "SET_DB_STICKY",
        ReloadPublicIps = 134 => "RELOAD_PUBLIC_IPS",
        TraverseAllExt = 135 => "TRAVERSE_ALL_EXT",
        ReceiveRecords = 136 => "RECEIVE_RECORDS",
        Ipreallocated = 137 => "IPREALLOCATED",
        GetRunstate = 138 => "GET_RUNSTATE",
        DbDetach = 139 => "DB_DETACH",
        GetNodesFile = 140 => "GET_NODES_FILE",
        DbFreeze = 141 => "DB_FREEZE",
        DbThaw = 142 => "DB_THAW",
        DbTransactionStart = 143 => "DB_TRANSACTION_START",
        DbTransactionCommit = 144 => "DB_TRANSACTION_COMMIT",
        DbTransactionCancel = 145 => "DB_TRANSACTION_CANCEL",
        DbPull = 146 => "DB_PULL",
        DbPushStart = 147 => "DB_PUSH_START",
        DbPushConfirm = 148 => "DB_PUSH_CONFIRM",
        DbOpenFlags = 149 => "DB_OPEN_FLAGS",
        DbAttachReplicated = 150 => "DB_ATTACH_REPLICATED",
        CheckPidSrvid = 151 => "CHECK_PID_SRVID",
        TunnelRegister = 152 => "TUNNEL_REGISTER",
        TunnelDeregister = 153 => "TUNNEL_DEREGISTER",
        VacuumFetch = 154 => "VACUUM_FETCH",
        DbVacuum = 155 => "DB_VACUUM",
        EchoData = 156 => "ECHO_DATA",
        DisableNode = 157 => "DISABLE_NODE",
        EnableNode = 158 => "ENABLE_NODE",
    }
}

impl ControlOpcode {
    /// Opcodes that 4.17 still defines but no longer implements: a 4.17 daemon answers them like
    /// an unknown opcode (status -1, no data, no error string).
    pub fn is_obsolete(self) -> bool {
        matches!(
            self,
            ControlOpcode::GetNodemapV4
                | ControlOpcode::SetDmaster
                | ControlOpcode::PullDb
                | ControlOpcode::PushDb
                | ControlOpcode::SetCall
                | ControlOpcode::GetRecmaster
                | ControlOpcode::SetRecmaster
                | ControlOpcode::Thaw
                | ControlOpcode::GetMonmode
                | ControlOpcode::TakeoverIpV4
                | ControlOpcode::ReleaseIpV4
                | ControlOpcode::GetPublicIpsV4
                | ControlOpcode::KillTcp
                | ControlOpcode::RegisterServerId
                | ControlOpcode::UnregisterServerId
                | ControlOpcode::CheckServerId
                | ControlOpcode::GetServerIdList
                | ControlOpcode::PersistentStore
                | ControlOpcode::TransactionStart
                | ControlOpcode::TransactionCommit
                | ControlOpcode::EnableMonitor
                | ControlOpcode::DisableMonitor
                | ControlOpcode::RunEventscripts
                | ControlOpcode::Trans2Commit
                | ControlOpcode::Trans2Finished
                | ControlOpcode::Trans2Error
                | ControlOpcode::Trans2CommitRetry
                | ControlOpcode::GetEventScriptStatus
                | ControlOpcode::SetReclockFile
                | ControlOpcode::SetNatgwstate
                | ControlOpcode::EnableScript
                | ControlOpcode::DisableScript
                | ControlOpcode::SetDbPriority
                | ControlOpcode::GetDbPriority
                | ControlOpcode::TransactionCancel
                | ControlOpcode::Trans2Active
                | ControlOpcode::GetLog
                | ControlOpcode::ClearLog
                | ControlOpcode::CheckSrvids
                | ControlOpcode::ReceiveRecords
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_opcode_round_trips_and_unknown_is_kept() {
        for &op in ControlOpcode::ALL {
            assert_eq!(ControlOpcode::from(u32::from(op)), op);
        }
        for raw in 0..1000u32 {
            assert_eq!(u32::from(ControlOpcode::from(raw)), raw);
        }
        assert_eq!(ControlOpcode::from(2), ControlOpcode::Unknown(2));
        assert_eq!(ControlOpcode::from(35), ControlOpcode::GetPnn);
        assert_eq!(ControlOpcode::from(158), ControlOpcode::EnableNode);
        assert_eq!(ControlOpcode::GetPnn.name(), "GET_PNN");
        assert!(ControlOpcode::GetNodemapV4.is_obsolete());
        assert!(!ControlOpcode::GetNodemap.is_obsolete());
    }
}
