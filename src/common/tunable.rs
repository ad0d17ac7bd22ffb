//! Tunables (mirrors `ctdb/common/tunable.c`, `ctdb/server/ctdb_tunables.c` and
//! `struct ctdb_tunable_list` in `ctdb/protocol/protocol.h`).
//!
//! Two orders matter. The *wire order* is the field order of `struct ctdb_tunable_list`, the
//! 248-byte body of `GET_ALL_TUNABLES`, and includes the obsolete tunables. The *list order* is
//! the order of stock's name table, used by `LIST_TUNABLES` and `ctdb listvars`; it differs in
//! two places (`LCP2PublicIPs` and `VacuumFastPathCount` sit elsewhere in the table).
//!
//! `ctdb.tunables` is read with the same ini reader as `ctdb.conf` (comments, blank collapsing,
//! continuation lines), but every option line must be `Name=value`, sections are errors and
//! the value is a whole unsigned number in C notation (`10`, `0x1f`, `017`). Stock keeps
//! reading after a bad line and ctdbd starts anyway, with every good line applied — including
//! obsolete tunables, which are set *and* reported as errors — so [`parse_file`] returns the
//! tunables together with all errors. Values above `u32::MAX` are rejected here; stock would
//! silently truncate them.

use super::conf::ini::{self, IniItem};
use std::fmt;
use std::path::Path;

pub const TUNABLE_COUNT: usize = 62;
/// Size of `struct ctdb_tunable_list` on the wire.
pub const TUNABLE_LIST_SIZE: usize = TUNABLE_COUNT * 4;

/// `-EINVAL`: the status of `GET_TUNABLE` for an unknown name.
pub const GET_UNKNOWN_STATUS: i32 = -22;
/// The status of `SET_TUNABLE` for an unknown name.
pub const SET_UNKNOWN_STATUS: i32 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunableSpec {
    pub name: &'static str,
    pub default: u32,
    /// Still on the wire and settable, but ignored by 4.17.
    pub obsolete: bool,
}

/// The tunable values in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tunables(pub [u32; TUNABLE_COUNT]);

macro_rules! tunable_table {
    ($($index:literal $field:ident $constant:ident $name:literal $default:literal $obsolete:literal;)*) => {
        /// Every tunable in wire order.
        pub const TUNABLES: [TunableSpec; TUNABLE_COUNT] = [
            $(TunableSpec { name: $name, default: $default, obsolete: $obsolete },)*
        ];

        impl Tunables {
            $(pub const $constant: usize = $index;)*

            $(
                #[doc = concat!("`", $name, "`")]
                pub fn $field(&self) -> u32 {
                    self.0[$index]
                }
            )*
        }
    };
}

tunable_table! {
     0 max_redirect_count MAX_REDIRECT_COUNT "MaxRedirectCount" 3 true;
     1 seqnum_interval SEQNUM_INTERVAL "SeqnumInterval" 1000 false;
     2 control_timeout CONTROL_TIMEOUT "ControlTimeout" 60 false;
     3 traverse_timeout TRAVERSE_TIMEOUT "TraverseTimeout" 20 false;
     4 keepalive_interval KEEPALIVE_INTERVAL "KeepaliveInterval" 5 false;
     5 keepalive_limit KEEPALIVE_LIMIT "KeepaliveLimit" 5 false;
     6 recover_timeout RECOVER_TIMEOUT "RecoverTimeout" 30 false;
     7 recover_interval RECOVER_INTERVAL "RecoverInterval" 1 false;
     8 election_timeout ELECTION_TIMEOUT "ElectionTimeout" 3 false;
     9 takeover_timeout TAKEOVER_TIMEOUT "TakeoverTimeout" 9 false;
    10 monitor_interval MONITOR_INTERVAL "MonitorInterval" 15 false;
    11 tickle_update_interval TICKLE_UPDATE_INTERVAL "TickleUpdateInterval" 20 false;
    12 script_timeout SCRIPT_TIMEOUT "EventScriptTimeout" 30 false;
    13 monitor_timeout_count MONITOR_TIMEOUT_COUNT "MonitorTimeoutCount" 20 false;
    14 script_unhealthy_on_timeout SCRIPT_UNHEALTHY_ON_TIMEOUT "EventScriptUnhealthyOnTimeout" 0 true;
    15 recovery_grace_period RECOVERY_GRACE_PERIOD "RecoveryGracePeriod" 120 false;
    16 recovery_ban_period RECOVERY_BAN_PERIOD "RecoveryBanPeriod" 300 false;
    17 database_hash_size DATABASE_HASH_SIZE "DatabaseHashSize" 100_001 false;
    18 database_max_dead DATABASE_MAX_DEAD "DatabaseMaxDead" 5 false;
    19 rerecovery_timeout RERECOVERY_TIMEOUT "RerecoveryTimeout" 10 false;
    20 enable_bans ENABLE_BANS "EnableBans" 1 false;
    21 deterministic_public_ips DETERMINISTIC_PUBLIC_IPS "DeterministicIPs" 0 true;
    22 reclock_ping_period RECLOCK_PING_PERIOD "ReclockPingPeriod" 60 true;
    23 no_ip_failback NO_IP_FAILBACK "NoIPFailback" 0 false;
    24 disable_ip_failover DISABLE_IP_FAILOVER "DisableIPFailover" 0 true;
    25 verbose_memory_names VERBOSE_MEMORY_NAMES "VerboseMemoryNames" 0 false;
    26 recd_ping_timeout RECD_PING_TIMEOUT "RecdPingTimeout" 60 false;
    27 recd_ping_failcount RECD_PING_FAILCOUNT "RecdFailCount" 10 false;
    28 log_latency_ms LOG_LATENCY_MS "LogLatencyMs" 0 false;
    29 reclock_latency_ms RECLOCK_LATENCY_MS "RecLockLatencyMs" 1000 false;
    30 recovery_drop_all_ips RECOVERY_DROP_ALL_IPS "RecoveryDropAllIPs" 120 false;
    31 verify_recovery_lock VERIFY_RECOVERY_LOCK "VerifyRecoveryLock" 1 true;
    32 vacuum_interval VACUUM_INTERVAL "VacuumInterval" 10 false;
    33 vacuum_max_run_time VACUUM_MAX_RUN_TIME "VacuumMaxRunTime" 120 false;
    34 repack_limit REPACK_LIMIT "RepackLimit" 10_000 false;
    35 vacuum_limit VACUUM_LIMIT "VacuumLimit" 5000 true;
    36 max_queue_depth_drop_msg MAX_QUEUE_DEPTH_DROP_MSG "MaxQueueDropMsg" 1_000_000 false;
    37 allow_unhealthy_db_read ALLOW_UNHEALTHY_DB_READ "AllowUnhealthyDBRead" 0 false;
    38 stat_history_interval STAT_HISTORY_INTERVAL "StatHistoryInterval" 1 false;
    39 deferred_attach_timeout DEFERRED_ATTACH_TIMEOUT "DeferredAttachTO" 120 false;
    40 vacuum_fast_path_count VACUUM_FAST_PATH_COUNT "VacuumFastPathCount" 60 false;
    41 lcp2_public_ip_assignment LCP2_PUBLIC_IP_ASSIGNMENT "LCP2PublicIPs" 1 true;
    42 allow_client_db_attach ALLOW_CLIENT_DB_ATTACH "AllowClientDBAttach" 1 false;
    43 recover_pdb_by_seqnum RECOVER_PDB_BY_SEQNUM "RecoverPDBBySeqNum" 1 true;
    44 deferred_rebalance_on_node_add DEFERRED_REBALANCE_ON_NODE_ADD "DeferredRebalanceOnNodeAdd" 300 true;
    45 fetch_collapse FETCH_COLLAPSE "FetchCollapse" 1 false;
    46 hopcount_make_sticky HOPCOUNT_MAKE_STICKY "HopcountMakeSticky" 50 false;
    47 sticky_duration STICKY_DURATION "StickyDuration" 600 false;
    48 sticky_pindown STICKY_PINDOWN "StickyPindown" 200 false;
    49 no_ip_takeover NO_IP_TAKEOVER "NoIPTakeover" 0 false;
    50 db_record_count_warn DB_RECORD_COUNT_WARN "DBRecordCountWarn" 100_000 false;
    51 db_record_size_warn DB_RECORD_SIZE_WARN "DBRecordSizeWarn" 10_000_000 false;
    52 db_size_warn DB_SIZE_WARN "DBSizeWarn" 100_000_000 false;
    53 pulldb_preallocation_size PULLDB_PREALLOCATION_SIZE "PullDBPreallocation" 10_485_760 false;
    54 no_ip_host_on_all_disabled NO_IP_HOST_ON_ALL_DISABLED "NoIPHostOnAllDisabled" 1 true;
    55 samba3_hack SAMBA3_HACK "Samba3AvoidDeadlocks" 0 true;
    56 mutex_enabled MUTEX_ENABLED "TDBMutexEnabled" 1 true;
    57 lock_processes_per_db LOCK_PROCESSES_PER_DB "LockProcessesPerDB" 200 false;
    58 rec_buffer_size_limit REC_BUFFER_SIZE_LIMIT "RecBufferSizeLimit" 1_000_000 false;
    59 queue_buffer_size QUEUE_BUFFER_SIZE "QueueBufferSize" 1024 false;
    60 ip_alloc_algorithm IP_ALLOC_ALGORITHM "IPAllocAlgorithm" 2 false;
    61 allow_mixed_versions ALLOW_MIXED_VERSIONS "AllowMixedVersions" 0 false;
}

/// Wire indices in stock's name-table order (`LIST_TUNABLES`, `ctdb listvars`).
pub const LIST_ORDER: [usize; TUNABLE_COUNT] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 41, 22, 23, 24,
    25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 40, 36, 37, 38, 39, 42, 43, 44, 45, 46, 47, 48, 49,
    50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
];

/// Wire index of a tunable, ignoring ASCII case like `strcasecmp`.
pub fn find_tunable(name: &str) -> Option<usize> {
    TUNABLES
        .iter()
        .position(|t| t.name.eq_ignore_ascii_case(name))
}

/// A name that is not a tunable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTunable(pub String);

impl fmt::Display for UnknownTunable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown tunable \"{}\"", self.0)
    }
}

impl std::error::Error for UnknownTunable {}

/// What a successful `SET_TUNABLE` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    Set,
    /// The value was stored but the tunable does nothing; stock answers status 1.
    Obsolete,
}

impl SetOutcome {
    /// The control status stock returns.
    pub fn status(self) -> i32 {
        match self {
            SetOutcome::Set => 0,
            SetOutcome::Obsolete => 1,
        }
    }
}

impl Default for Tunables {
    fn default() -> Self {
        let mut values = [0u32; TUNABLE_COUNT];
        for (value, spec) in values.iter_mut().zip(TUNABLES.iter()) {
            *value = spec.default;
        }
        Tunables(values)
    }
}

impl Tunables {
    /// `ctdb_tunable_get_value`: obsolete tunables can be read too.
    pub fn get(&self, name: &str) -> Result<u32, UnknownTunable> {
        find_tunable(name)
            .map(|i| self.0[i])
            .ok_or_else(|| UnknownTunable(name.to_string()))
    }

    /// `ctdb_tunable_set_value`: an obsolete tunable is still stored.
    pub fn set(&mut self, name: &str, value: u32) -> Result<SetOutcome, UnknownTunable> {
        let i = find_tunable(name).ok_or_else(|| UnknownTunable(name.to_string()))?;
        self.0[i] = value;
        Ok(if TUNABLES[i].obsolete {
            SetOutcome::Obsolete
        } else {
            SetOutcome::Set
        })
    }

    /// Names and values of the live tunables in list order, as `ctdb listvars` shows them.
    pub fn list(&self) -> Vec<(&'static str, u32)> {
        LIST_ORDER
            .iter()
            .filter(|&&i| !TUNABLES[i].obsolete)
            .map(|&i| (TUNABLES[i].name, self.0[i]))
            .collect()
    }

    /// The wire form: the values in wire order.
    pub fn to_wire(&self) -> [u32; TUNABLE_COUNT] {
        self.0
    }

    pub fn from_wire(values: [u32; TUNABLE_COUNT]) -> Self {
        Tunables(values)
    }

    /// The 248 raw bytes (host byte order).
    pub fn to_bytes(&self) -> [u8; TUNABLE_LIST_SIZE] {
        let mut out = [0u8; TUNABLE_LIST_SIZE];
        for (chunk, value) in out.chunks_exact_mut(4).zip(self.0.iter()) {
            chunk.copy_from_slice(&value.to_ne_bytes());
        }
        out
    }

    /// From exactly 248 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != TUNABLE_LIST_SIZE {
            return None;
        }
        let mut values = [0u32; TUNABLE_COUNT];
        for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(Tunables(values))
    }
}

/// Names of the live tunables in list order.
pub fn tunable_names() -> Vec<&'static str> {
    LIST_ORDER
        .iter()
        .filter(|&&i| !TUNABLES[i].obsolete)
        .map(|&i| TUNABLES[i].name)
        .collect()
}

/// `ctdb_tunable_names_to_string`: the `LIST_TUNABLES` payload text, `:Name1:Name2:...`
/// (note the leading colon).
pub fn names_to_string() -> String {
    tunable_names()
        .iter()
        .map(|name| format!(":{name}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// ctdb.tunables
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunableFileErrorKind {
    /// Stock stops reading at such a line.
    Syntax {
        text: String,
    },
    Section {
        name: String,
    },
    MissingValue {
        name: String,
    },
    BadValue {
        name: String,
        value: String,
    },
    Unknown {
        name: String,
    },
    /// The value was applied anyway, as in stock.
    Obsolete {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunableFileError {
    pub file: String,
    pub line: u32,
    pub kind: TunableFileErrorKind,
}

impl fmt::Display for TunableFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TunableFileErrorKind as K;
        write!(f, "{}:{}: ", self.file, self.line)?;
        match &self.kind {
            K::Syntax { text } => write!(f, "syntax error: \"{text}\""),
            K::Section { name } => write!(
                f,
                "invalid line for section [{name}] - sections not supported"
            ),
            K::MissingValue { name } => write!(f, "invalid line containing \"{name}\""),
            K::BadValue { name, value } => {
                write!(f, "invalid value \"{value}\" for tunable \"{name}\"")
            }
            K::Unknown { name } => write!(f, "unknown tunable \"{name}\""),
            K::Obsolete { name } => write!(f, "obsolete tunable \"{name}\""),
        }
    }
}

impl std::error::Error for TunableFileError {}

/// The outcome of reading `ctdb.tunables`: the values ctdbd would run with, and every problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunablesFile {
    pub tunables: Tunables,
    pub errors: Vec<TunableFileError>,
}

impl TunablesFile {
    /// Strict view: the tunables only if the file had no problems.
    pub fn into_result(self) -> Result<Tunables, Vec<TunableFileError>> {
        if self.errors.is_empty() {
            Ok(self.tunables)
        } else {
            Err(self.errors)
        }
    }
}

/// `smb_strtoul(value, NULL, 0, .., SMB_STR_FULL_STR_CONV)` narrowed to `u32`: optional `+`,
/// then decimal, `0x` hex or `0` octal digits, and nothing after them.
pub fn parse_c_unsigned(text: &str) -> Option<u32> {
    let s = text.trim_start_matches(|c: char| c.is_ascii() && ini::is_space(c as u8));
    let s = s.strip_prefix('+').unwrap_or(s);
    let (digits, radix) = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Parses `ctdb.tunables` on top of the defaults.
pub fn parse_file(text: &str, file_name: &str) -> TunablesFile {
    use TunableFileErrorKind as K;
    let mut tunables = Tunables::default();
    let mut errors = Vec::new();
    let mut report = |line: u32, kind: TunableFileErrorKind| {
        errors.push(TunableFileError {
            file: file_name.to_string(),
            line,
            kind,
        });
    };
    for item in ini::parse(text) {
        match item {
            IniItem::SyntaxError { line, text, .. } => report(line, K::Syntax { text }),
            IniItem::Section { line, name } => report(line, K::Section { name }),
            IniItem::Param { line, name, value } => {
                let value = value.unwrap_or_default();
                if value.is_empty() {
                    report(line, K::MissingValue { name });
                    continue;
                }
                let Some(number) = parse_c_unsigned(&value) else {
                    report(line, K::BadValue { name, value });
                    continue;
                };
                match tunables.set(&name, number) {
                    Ok(SetOutcome::Set) => {}
                    Ok(SetOutcome::Obsolete) => report(line, K::Obsolete { name }),
                    Err(_) => report(line, K::Unknown { name }),
                }
            }
        }
    }
    TunablesFile { tunables, errors }
}

/// Reads `ctdb.tunables`; a missing file means the defaults.
pub fn load_file(path: &Path) -> std::io::Result<TunablesFile> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse_file(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TunablesFile {
            tunables: Tunables::default(),
            errors: Vec::new(),
        }),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TunableFileErrorKind as K;

    /// `ctdb/tests/UNIT/cunit/tunable_test_001.sh`: defaults in list order.
    const STOCK_DEFAULTS: &str = "\
SeqnumInterval=1000
ControlTimeout=60
TraverseTimeout=20
KeepaliveInterval=5
KeepaliveLimit=5
RecoverTimeout=30
RecoverInterval=1
ElectionTimeout=3
TakeoverTimeout=9
MonitorInterval=15
TickleUpdateInterval=20
EventScriptTimeout=30
MonitorTimeoutCount=20
RecoveryGracePeriod=120
RecoveryBanPeriod=300
DatabaseHashSize=100001
DatabaseMaxDead=5
RerecoveryTimeout=10
EnableBans=1
NoIPFailback=0
VerboseMemoryNames=0
RecdPingTimeout=60
RecdFailCount=10
LogLatencyMs=0
RecLockLatencyMs=1000
RecoveryDropAllIPs=120
VacuumInterval=10
VacuumMaxRunTime=120
RepackLimit=10000
VacuumFastPathCount=60
MaxQueueDropMsg=1000000
AllowUnhealthyDBRead=0
StatHistoryInterval=1
DeferredAttachTO=120
AllowClientDBAttach=1
FetchCollapse=1
HopcountMakeSticky=50
StickyDuration=600
StickyPindown=200
NoIPTakeover=0
DBRecordCountWarn=100000
DBRecordSizeWarn=10000000
DBSizeWarn=100000000
PullDBPreallocation=10485760
LockProcessesPerDB=200
RecBufferSizeLimit=1000000
QueueBufferSize=1024
IPAllocAlgorithm=2
AllowMixedVersions=0
";

    fn listing(t: &Tunables) -> String {
        t.list()
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect()
    }

    #[test]
    fn defaults_in_list_order_match_stock() {
        assert_eq!(listing(&Tunables::default()), STOCK_DEFAULTS);
        assert_eq!(tunable_names().len(), 49);
        assert_eq!(TUNABLES.iter().filter(|t| t.obsolete).count(), 13);
    }

    #[test]
    fn wire_order_and_offsets() {
        let t = Tunables::default();
        assert_eq!(TUNABLES[0].name, "MaxRedirectCount");
        assert_eq!(TUNABLES[41].name, "LCP2PublicIPs");
        assert_eq!(TUNABLES[61].name, "AllowMixedVersions");
        assert_eq!(t.keepalive_interval(), 5);
        assert_eq!(t.0[Tunables::DATABASE_HASH_SIZE], 100_001);
        assert_eq!(Tunables::VACUUM_FAST_PATH_COUNT, 40);
        let bytes = t.to_bytes();
        assert_eq!(bytes.len(), 248);
        // Offset 68 is DatabaseHashSize (digest section 6.4).
        assert_eq!(&bytes[68..72], &100_001u32.to_ne_bytes());
        assert_eq!(Tunables::from_bytes(&bytes), Some(t));
        assert_eq!(Tunables::from_bytes(&bytes[1..]), None);
        assert_eq!(Tunables::from_wire(t.to_wire()), t);
        // Every list-order index appears exactly once.
        let mut seen = LIST_ORDER;
        seen.sort_unstable();
        assert!(seen.iter().enumerate().all(|(i, &v)| i == v));
    }

    #[test]
    fn seeded_byte_round_trip() {
        for seed in crate::testing::seeds(20) {
            let mut rng = crate::testing::Prng::new(seed);
            let mut values = [0u32; TUNABLE_COUNT];
            for v in values.iter_mut() {
                *v = rng.u32();
            }
            let t = Tunables(values);
            assert_eq!(Tunables::from_bytes(&t.to_bytes()), Some(t), "seed {seed}");
        }
    }

    #[test]
    fn get_and_set_semantics() {
        let mut t = Tunables::default();
        assert_eq!(t.get("enablebans"), Ok(1));
        assert_eq!(t.get("MAXREDIRECTCOUNT"), Ok(3));
        assert_eq!(t.get("NoSuch"), Err(UnknownTunable("NoSuch".into())));
        assert_eq!(t.set("RecoverInterval", 7), Ok(SetOutcome::Set));
        assert_eq!(t.recover_interval(), 7);
        assert_eq!(t.set("VacuumLimit", 9).map(SetOutcome::status), Ok(1));
        assert_eq!(t.vacuum_limit(), 9);
        assert!(t.set("", 1).is_err());
        assert_eq!(GET_UNKNOWN_STATUS, -22);
        assert_eq!(SET_UNKNOWN_STATUS, -1);
    }

    #[test]
    fn list_tunables_text() {
        let s = names_to_string();
        assert!(s.starts_with(":SeqnumInterval:ControlTimeout:"));
        assert!(s.ends_with(":IPAllocAlgorithm:AllowMixedVersions"));
        assert!(s.contains(":RepackLimit:VacuumFastPathCount:MaxQueueDropMsg:"));
        assert!(!s.contains("LCP2PublicIPs"));
    }

    fn load(text: &str) -> TunablesFile {
        parse_file(text, "ctdb.tunables")
    }

    fn kinds(f: &TunablesFile) -> Vec<(u32, K)> {
        f.errors.iter().map(|e| (e.line, e.kind.clone())).collect()
    }

    // The cases below follow tunable_test_001.sh.

    #[test]
    fn invalid_lines() {
        let name = |n: &str| n.to_string();
        assert_eq!(
            kinds(&load("Hello\n")),
            vec![(
                1,
                K::MissingValue {
                    name: name("Hello")
                }
            )]
        );
        assert_eq!(
            kinds(&load("Hello world!\n")),
            vec![(
                1,
                K::MissingValue {
                    name: name("Hello world!")
                }
            )]
        );
        assert_eq!(
            kinds(&load("EnableBans=\n")),
            vec![(
                1,
                K::MissingValue {
                    name: name("EnableBans")
                }
            )]
        );
        assert_eq!(
            kinds(&load("EnableBans=value\n")),
            vec![(
                1,
                K::BadValue {
                    name: name("EnableBans"),
                    value: name("value")
                }
            )]
        );
        assert!(matches!(
            kinds(&load("=123\n"))[..],
            [(1, K::Syntax { .. })]
        ));
        assert!(matches!(kinds(&load(" =0\n"))[..], [(1, K::Syntax { .. })]));
        assert_eq!(
            kinds(&load("HelloWorld=123\n")),
            vec![(
                1,
                K::Unknown {
                    name: name("HelloWorld")
                }
            )]
        );
        let f = load("MaxRedirectCount=123\n");
        assert_eq!(
            kinds(&f),
            vec![(
                1,
                K::Obsolete {
                    name: name("MaxRedirectCount")
                }
            )]
        );
        assert_eq!(f.tunables.max_redirect_count(), 123);
        assert_eq!(
            kinds(&load("EnableBans=0xgg\n")),
            vec![(
                1,
                K::BadValue {
                    name: name("EnableBans"),
                    value: name("0xgg")
                }
            )]
        );
        assert_eq!(
            kinds(&load("[section]\nEnableBans=0\n")),
            vec![(
                1,
                K::Section {
                    name: name("section")
                }
            )]
        );
        let e = &load("\n\nHelloWorld=123\n").errors[0];
        assert_eq!(
            e.to_string(),
            "ctdb.tunables:3: unknown tunable \"HelloWorld\""
        );
    }

    #[test]
    fn multiple_errors_stop_at_syntax_error() {
        let f =
            load("EnableBans=\nEnableBans=value\n=123\nHelloWorld=123\nMaxRedirectCount =123\n");
        let lines: Vec<u32> = f.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 3]);
        assert!(matches!(f.errors[2].kind, K::Syntax { .. }));
        assert_eq!(f.tunables.max_redirect_count(), 3);
    }

    #[test]
    fn errors_followed_by_valid_lines_still_apply() {
        let f = load("HelloWorld=123\nEnableBans=value\nEnableBans=0\n");
        assert_eq!(f.errors.len(), 2);
        assert_eq!(f.tunables.enable_bans(), 0);
        assert!(f.into_result().is_err());
    }

    #[test]
    fn valid_files() {
        let value = |text: &str, name: &str| {
            let f = load(text);
            assert!(f.errors.is_empty(), "{text:?}: {:?}", f.errors);
            f.tunables.get(name).unwrap()
        };
        assert_eq!(listing(&load("").tunables), STOCK_DEFAULTS);
        assert_eq!(
            listing(&load("# This is a comment\n\n# blank lines\n\n\n").tunables),
            STOCK_DEFAULTS
        );
        assert_eq!(value("EnableBans=0\n", "EnableBans"), 0);
        assert_eq!(value("EnableBans=0xf\n", "EnableBans"), 15);
        assert_eq!(value("EnableBans=072\n", "EnableBans"), 58);
        assert_eq!(value("EnableBans\t=0\n", "EnableBans"), 0);
        assert_eq!(value("EnableBans= 7\n", "EnableBans"), 7);
        assert_eq!(value("EnableBans      =  9\r\n", "EnableBans"), 9);
        assert_eq!(value("\tRecoverInterval = 10 \n", "RecoverInterval"), 10);
        let f = load(
            "# Leading comment\nenablebans=0\nReCoVerInTeRvAl\t =    10\n\n\
             # Intermediate comment after a blank line\n  ELECTIONTIMEOUT=25   \n\n\n\
             # Final comment among blanks lines\n\n\n\n",
        );
        assert!(f.errors.is_empty());
        assert_eq!(f.tunables.enable_bans(), 0);
        assert_eq!(f.tunables.recover_interval(), 10);
        assert_eq!(f.tunables.election_timeout(), 25);
    }

    #[test]
    fn c_unsigned_numbers() {
        assert_eq!(parse_c_unsigned("0"), Some(0));
        assert_eq!(parse_c_unsigned("+5"), Some(5));
        assert_eq!(parse_c_unsigned("0X1F"), Some(31));
        assert_eq!(parse_c_unsigned("4294967295"), Some(u32::MAX));
        for bad in [
            "",
            "-1",
            "-0",
            "0x",
            "08",
            "1 2",
            "4294967296",
            "12abc",
            "+",
        ] {
            assert_eq!(parse_c_unsigned(bad), None, "{bad}");
        }
    }

    #[test]
    fn load_missing_file_is_defaults() {
        let f = load_file(Path::new("/nonexistent/ctdb.tunables")).unwrap();
        assert_eq!(f.tunables, Tunables::default());
        assert!(f.errors.is_empty());
    }
}
