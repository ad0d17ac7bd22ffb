//! What ctdbd and its helper programs say to each other outside the packet protocol: command
//! lines and the tiny result messages written to pipes.
//!
//! Mirrors `ctdb/server/ctdb_cluster_mutex.c` and `ctdb_mutex_fcntl_helper.c` (one ASCII
//! character on the helper's stdout), and `ctdb_recoverd.c:helper_run` with
//! `ctdb_recovery_helper.c` and `ctdb_takeover_helper.c` (one host-order C `int` written to
//! the fd named in `argv[1]`). Numbers on these command lines are parsed the way the C helpers
//! parse them (`atoi`, `strtoul`), quirks included, so that a Rust helper accepts exactly the
//! command lines a stock daemon produces and vice versa.

use std::fmt;

/// Exported by the recovery daemon before it starts the takeover helper when
/// `[failover] disabled = true`; the helper only checks that it is set.
pub const ENV_DISABLE_IP_FAILOVER: &str = "CTDB_DISABLE_IP_FAILOVER";
/// Exported to the recovery helper: where its scratch `recdb.*` databases go.
pub const ENV_DBDIR_STATE: &str = "CTDB_DBDIR_STATE";

/// Default `recheck_interval` of `ctdb_mutex_fcntl_helper`, seconds.
pub const FCNTL_HELPER_DEFAULT_RECHECK_INTERVAL: u64 = 5;

/// `EPIPE` on x86_64 Linux: what the recovery daemon records when a helper's result is missing.
pub const EPIPE: i32 = 32;

/// The one-character answer of a cluster mutex helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterMutexResult {
    /// `'0'`: the helper holds the lock and keeps holding it until killed or its parent dies.
    Taken,
    /// `'1'`: someone else holds it.
    Contended,
    /// `'2'`: never written by a helper; the parent reports it when its timer expires first.
    Timeout,
    /// `'3'`: the helper failed; also what the parent assumes when the pipe yields no byte.
    Error,
    /// Any other byte. Stock callers treat it as an unknown error.
    Unknown(u8),
}

impl ClusterMutexResult {
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            b'0' => ClusterMutexResult::Taken,
            b'1' => ClusterMutexResult::Contended,
            b'2' => ClusterMutexResult::Timeout,
            b'3' => ClusterMutexResult::Error,
            other => ClusterMutexResult::Unknown(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            ClusterMutexResult::Taken => b'0',
            ClusterMutexResult::Contended => b'1',
            ClusterMutexResult::Timeout => b'2',
            ClusterMutexResult::Error => b'3',
            ClusterMutexResult::Unknown(byte) => byte,
        }
    }

    /// Interprets the parent's first one-byte read of the helper's pipe: anything but exactly
    /// one byte (EOF, or an error) counts as [`ClusterMutexResult::Error`], as in
    /// `ctdb_cluster_mutex.c:cluster_mutex_handler`.
    pub fn from_first_read(read: &[u8]) -> Self {
        match read {
            [byte] => Self::from_byte(*byte),
            _ => ClusterMutexResult::Error,
        }
    }
}

/// Encodes the result a recovery or takeover helper writes to its result fd.
pub fn helper_result_to_bytes(result: i32) -> [u8; 4] {
    result.to_ne_bytes()
}

/// Decodes what one read of a helper's result pipe returned. Anything but exactly four bytes
/// (the helper died without writing, or wrote short) becomes [`EPIPE`], as in
/// `ctdb_recoverd.c:helper_handler`.
pub fn helper_result_from_read(read: &[u8]) -> i32 {
    match <[u8; 4]>::try_from(read) {
        Ok(bytes) => i32::from_ne_bytes(bytes),
        Err(_) => EPIPE,
    }
}

/// Why a helper command line could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperArgError {
    /// argv (including `argv[0]`) had a length outside `min..=max`.
    ArgCount { min: usize, max: usize, got: usize },
    /// A numeric argument that the C helper rejects.
    BadNumber { what: &'static str, value: String },
    /// `cluster lock = !` followed by nothing but blanks.
    EmptyCommand,
}

impl fmt::Display for HelperArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelperArgError::ArgCount { min, max, got } => {
                write!(
                    f,
                    "expected {min} to {max} arguments including the program, got {got}"
                )
            }
            HelperArgError::BadNumber { what, value } => write!(f, "invalid {what} \"{value}\""),
            HelperArgError::EmptyCommand => write!(f, "mutex helper command is empty"),
        }
    }
}

impl std::error::Error for HelperArgError {}

fn check_argc(argv: &[String], min: usize, max: usize) -> Result<(), HelperArgError> {
    if (min..=max).contains(&argv.len()) {
        Ok(())
    } else {
        Err(HelperArgError::ArgCount {
            min,
            max,
            got: argv.len(),
        })
    }
}

/// `ctdb_recovery_helper <write-fd> <ctdbd-socket> <generation>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryHelperArgs {
    pub write_fd: i32,
    pub socket: String,
    pub generation: u32,
}

impl RecoveryHelperArgs {
    /// The full argv, `program` first, as `helper_run` passes it to `execv`.
    pub fn to_argv(&self, program: &str) -> Vec<String> {
        vec![
            program.to_owned(),
            self.write_fd.to_string(),
            self.socket.clone(),
            self.generation.to_string(),
        ]
    }

    /// Mirrors the checks of `ctdb_recovery_helper.c:main`: exactly three arguments, the fd
    /// through `atoi`, the generation through `strtoul(.., 0)` without sign and truncated to
    /// 32 bits.
    pub fn parse(argv: &[String]) -> Result<Self, HelperArgError> {
        check_argc(argv, 4, 4)?;
        let generation = c_strtoul(&argv[3], 0).ok_or_else(|| HelperArgError::BadNumber {
            what: "generation",
            value: argv[3].clone(),
        })?;
        Ok(RecoveryHelperArgs {
            write_fd: c_atoi(&argv[1]),
            socket: argv[2].clone(),
            // Stock casts the unsigned long to uint32_t.
            generation: generation as u32,
        })
    }
}

/// `ctdb_takeover_helper <write-fd> <ctdbd-socket> [<pnn>,<pnn>,...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverHelperArgs {
    pub write_fd: i32,
    pub socket: String,
    /// Nodes whose IPs should be rebalanced onto them; the argument is left out when empty.
    pub force_rebalance: Vec<u32>,
}

impl TakeoverHelperArgs {
    pub fn to_argv(&self, program: &str) -> Vec<String> {
        let mut argv = vec![
            program.to_owned(),
            self.write_fd.to_string(),
            self.socket.clone(),
        ];
        if !self.force_rebalance.is_empty() {
            let list: Vec<String> = self.force_rebalance.iter().map(u32::to_string).collect();
            argv.push(list.join(","));
        }
        argv
    }

    /// Mirrors `ctdb_takeover_helper.c:main` and `parse_node_list`: empty items between commas
    /// are skipped and each item goes through `atoi`, so garbage becomes node 0.
    pub fn parse(argv: &[String]) -> Result<Self, HelperArgError> {
        check_argc(argv, 3, 4)?;
        let force_rebalance = match argv.get(3) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .filter(|item| !item.is_empty())
                // atoi's int stored in a uint32_t: -1 becomes 0xffffffff.
                .map(|item| c_atoi(item) as u32)
                .collect(),
        };
        Ok(TakeoverHelperArgs {
            write_fd: c_atoi(&argv[1]),
            socket: argv[2].clone(),
            force_rebalance,
        })
    }
}

/// Whether the takeover helper should skip IP allocation: the variable only has to exist.
pub fn ip_failover_disabled(env_value: Option<&str>) -> bool {
    env_value.is_some()
}

/// `ctdb_mutex_fcntl_helper <file> [recheck_interval [ping_timeout]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcntlHelperArgs {
    pub file: String,
    /// Seconds between checks that the lock file is still the same file; 0 disables them.
    pub recheck_interval: u64,
    /// Seconds without a ping from the checker before giving up; 0 disables pings.
    pub ping_timeout: u64,
}

impl FcntlHelperArgs {
    pub fn new(file: impl Into<String>) -> Self {
        FcntlHelperArgs {
            file: file.into(),
            recheck_interval: FCNTL_HELPER_DEFAULT_RECHECK_INTERVAL,
            ping_timeout: 0,
        }
    }

    /// The shortest argv that means these values.
    pub fn to_argv(&self, program: &str) -> Vec<String> {
        let mut argv = vec![program.to_owned(), self.file.clone()];
        if self.ping_timeout != 0 || self.recheck_interval != FCNTL_HELPER_DEFAULT_RECHECK_INTERVAL
        {
            argv.push(self.recheck_interval.to_string());
        }
        if self.ping_timeout != 0 {
            argv.push(self.ping_timeout.to_string());
        }
        argv
    }

    /// Mirrors `ctdb_mutex_fcntl_helper.c:main`: one to three arguments, numbers in base 10
    /// through `strtoul` (trailing junk ignored, signs and empty numbers rejected).
    pub fn parse(argv: &[String]) -> Result<Self, HelperArgError> {
        check_argc(argv, 2, 4)?;
        let number = |index: usize, what: &'static str, default: u64| match argv.get(index) {
            None => Ok(default),
            Some(text) => c_strtoul(text, 10).ok_or_else(|| HelperArgError::BadNumber {
                what,
                value: text.clone(),
            }),
        };
        Ok(FcntlHelperArgs {
            file: argv[1].clone(),
            recheck_interval: number(2, "recheck interval", FCNTL_HELPER_DEFAULT_RECHECK_INTERVAL)?,
            ping_timeout: number(3, "ping timeout", 0)?,
        })
    }
}

/// The argv ctdbd executes for a `[cluster] cluster lock` setting
/// (`ctdb_cluster_mutex.c:cluster_mutex_helper_args`). A value starting with `!` is a command
/// line split on spaces and tabs, with no shell, quoting or escapes; anything else is a lock
/// file handed as the single argument to `default_helper` (the fcntl helper, or
/// `$CTDB_CLUSTER_MUTEX_HELPER`).
pub fn cluster_mutex_argv(lock: &str, default_helper: &str) -> Result<Vec<String>, HelperArgError> {
    match lock.strip_prefix('!') {
        Some(command) => {
            let argv: Vec<String> = command
                .split([' ', '\t'])
                .filter(|word| !word.is_empty())
                .map(str::to_owned)
                .collect();
            if argv.is_empty() {
                return Err(HelperArgError::EmptyCommand);
            }
            Ok(argv)
        }
        None => Ok(vec![default_helper.to_owned(), lock.to_owned()]),
    }
}

/// C `isspace` in the C locale.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// glibc `atoi`: `(int)strtol(s, NULL, 10)` with no error reporting. Leading blanks and one
/// sign are accepted, parsing stops at the first non-digit, no digits gives 0, and a value
/// outside `long` saturates before being truncated to `int`.
pub fn c_atoi(text: &str) -> i32 {
    let bytes = text.as_bytes();
    let mut at = bytes.iter().take_while(|&&b| is_c_space(b)).count();
    let negative = match bytes.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    for &b in bytes[at..].iter().take_while(|b| b.is_ascii_digit()) {
        match magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
    }
    let long = if negative {
        if overflow || magnitude > i64::MIN.unsigned_abs() {
            i64::MIN
        } else {
            0i64.wrapping_sub_unsigned(magnitude)
        }
    } else if overflow {
        i64::MAX
    } else {
        i64::try_from(magnitude).unwrap_or(i64::MAX)
    };
    long as i32
}

/// `smb_strtoul(text, NULL, base, &err, SMB_STR_STANDARD)` for base 0 or 10: `None` where it
/// sets `err` (no digits, a minus sign, or overflow of the 64-bit `unsigned long`). Leading
/// blanks and `+` are accepted and anything after the number is ignored. Base 0 picks hex for
/// `0x`, octal for a leading `0`, else decimal.
pub fn c_strtoul(text: &str, base: u32) -> Option<u64> {
    let bytes = text.as_bytes();
    let mut at = bytes.iter().take_while(|&&b| is_c_space(b)).count();
    match bytes.get(at) {
        Some(b'-') => return None,
        Some(b'+') => at += 1,
        _ => {}
    }
    let rest = &bytes[at..];
    let (radix, digits) = match base {
        0 if rest.len() > 2
            && rest[0] == b'0'
            && (rest[1] | 0x20) == b'x'
            && rest[2].is_ascii_hexdigit() =>
        {
            (16, &rest[2..])
        }
        0 if rest.first() == Some(&b'0') => (8, rest),
        0 => (10, rest),
        other => (other, rest),
    };
    let mut value: u64 = 0;
    let mut seen = false;
    for &b in digits {
        let Some(digit) = char::from(b).to_digit(radix) else {
            break;
        };
        seen = true;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    seen.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{seeds, Prng};

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn mutex_result_bytes() {
        for (byte, result) in [
            (b'0', ClusterMutexResult::Taken),
            (b'1', ClusterMutexResult::Contended),
            (b'2', ClusterMutexResult::Timeout),
            (b'3', ClusterMutexResult::Error),
            (b'x', ClusterMutexResult::Unknown(b'x')),
        ] {
            assert_eq!(ClusterMutexResult::from_byte(byte), result);
            assert_eq!(result.to_byte(), byte);
        }
        assert_eq!(
            ClusterMutexResult::from_first_read(b"1"),
            ClusterMutexResult::Contended
        );
        assert_eq!(
            ClusterMutexResult::from_first_read(b""),
            ClusterMutexResult::Error
        );
        assert_eq!(
            ClusterMutexResult::from_first_read(b"01"),
            ClusterMutexResult::Error
        );
    }

    #[test]
    fn helper_result_is_a_host_order_int_and_short_reads_are_epipe() {
        assert_eq!(helper_result_to_bytes(0), [0, 0, 0, 0]);
        assert_eq!(helper_result_to_bytes(-1), [0xff; 4]);
        assert_eq!(helper_result_to_bytes(110), [110, 0, 0, 0]);
        for seed in seeds(100) {
            let value = Prng::new(seed).i32();
            assert_eq!(
                helper_result_from_read(&helper_result_to_bytes(value)),
                value,
                "seed {seed}"
            );
        }
        assert_eq!(helper_result_from_read(&[]), EPIPE);
        assert_eq!(helper_result_from_read(&[0, 0]), EPIPE);
    }

    #[test]
    fn recovery_helper_argv() {
        let args = RecoveryHelperArgs {
            write_fd: 12,
            socket: "/run/ctdb/ctdbd.socket".into(),
            generation: 0x8000_0001,
        };
        let words = args.to_argv("/usr/libexec/ctdb/ctdb_recovery_helper");
        assert_eq!(
            words,
            argv(&[
                "/usr/libexec/ctdb/ctdb_recovery_helper",
                "12",
                "/run/ctdb/ctdbd.socket",
                "2147483649"
            ])
        );
        assert_eq!(RecoveryHelperArgs::parse(&words), Ok(args));
        // strtoul base 0, truncated to 32 bits; trailing junk ignored.
        let parsed =
            RecoveryHelperArgs::parse(&argv(&["p", "3x", "s", "0x100000005junk"])).unwrap();
        assert_eq!((parsed.write_fd, parsed.generation), (3, 5));
        assert_eq!(
            RecoveryHelperArgs::parse(&argv(&["p", "3", "s", "010"]))
                .unwrap()
                .generation,
            8
        );
        assert!(RecoveryHelperArgs::parse(&argv(&["p", "3", "s", "-1"])).is_err());
        assert!(RecoveryHelperArgs::parse(&argv(&["p", "3", "s", "x"])).is_err());
        assert!(RecoveryHelperArgs::parse(&argv(&["p", "3", "s"])).is_err());
    }

    #[test]
    fn takeover_helper_argv() {
        let none = TakeoverHelperArgs {
            write_fd: 9,
            socket: "/s".into(),
            force_rebalance: vec![],
        };
        assert_eq!(none.to_argv("t"), argv(&["t", "9", "/s"]));
        assert_eq!(TakeoverHelperArgs::parse(&none.to_argv("t")), Ok(none));
        let some = TakeoverHelperArgs {
            write_fd: 9,
            socket: "/s".into(),
            force_rebalance: vec![2, 0, 7],
        };
        assert_eq!(some.to_argv("t"), argv(&["t", "9", "/s", "2,0,7"]));
        assert_eq!(TakeoverHelperArgs::parse(&some.to_argv("t")), Ok(some));
        let odd = TakeoverHelperArgs::parse(&argv(&["t", "9", "/s", ",1,,x,-1,"])).unwrap();
        assert_eq!(odd.force_rebalance, vec![1, 0, u32::MAX]);
        assert!(TakeoverHelperArgs::parse(&argv(&["t", "9"])).is_err());
        assert!(TakeoverHelperArgs::parse(&argv(&["t", "9", "/s", "1", "2"])).is_err());
        assert!(ip_failover_disabled(Some("")));
        assert!(!ip_failover_disabled(None));
    }

    #[test]
    fn fcntl_helper_argv() {
        let default = FcntlHelperArgs::new("/shared/.ctdb/cluster.lock");
        assert_eq!(
            default.to_argv("h"),
            argv(&["h", "/shared/.ctdb/cluster.lock"])
        );
        assert_eq!(
            FcntlHelperArgs::parse(&default.to_argv("h")),
            Ok(default.clone())
        );
        let no_recheck = FcntlHelperArgs {
            recheck_interval: 0,
            ..default.clone()
        };
        assert_eq!(no_recheck.to_argv("h").len(), 3);
        assert_eq!(
            FcntlHelperArgs::parse(&no_recheck.to_argv("h")),
            Ok(no_recheck)
        );
        let ping = FcntlHelperArgs {
            ping_timeout: 10,
            ..default.clone()
        };
        assert_eq!(ping.to_argv("h")[2..], argv(&["5", "10"]));
        assert_eq!(FcntlHelperArgs::parse(&ping.to_argv("h")), Ok(ping));
        // Base 10 only: "010" is ten, "0x10" stops at the x.
        let odd = FcntlHelperArgs::parse(&argv(&["h", "f", "010", "0x10"])).unwrap();
        assert_eq!((odd.recheck_interval, odd.ping_timeout), (10, 0));
        assert!(FcntlHelperArgs::parse(&argv(&["h", "f", "-5"])).is_err());
        assert!(FcntlHelperArgs::parse(&argv(&["h", "f", ""])).is_err());
        assert!(FcntlHelperArgs::parse(&argv(&["h"])).is_err());
        assert!(FcntlHelperArgs::parse(&argv(&["h", "f", "1", "2", "3"])).is_err());
    }

    #[test]
    fn cluster_lock_string_to_argv() {
        assert_eq!(
            cluster_mutex_argv("/shared/lock", "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper"),
            Ok(argv(&[
                "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper",
                "/shared/lock"
            ]))
        );
        assert_eq!(
            cluster_mutex_argv("! /bin/helper\t a  'b c' ", "unused"),
            Ok(argv(&["/bin/helper", "a", "'b", "c'"]))
        );
        // A file name with blanks is passed whole to the default helper.
        assert_eq!(
            cluster_mutex_argv("/my lock", "h"),
            Ok(argv(&["h", "/my lock"]))
        );
        assert_eq!(
            cluster_mutex_argv("! \t ", "h"),
            Err(HelperArgError::EmptyCommand)
        );
        assert_eq!(
            cluster_mutex_argv("!", "h"),
            Err(HelperArgError::EmptyCommand)
        );
    }

    #[test]
    fn c_number_parsers_match_glibc() {
        assert_eq!(c_atoi(" \t-42abc"), -42);
        assert_eq!(c_atoi("+7"), 7);
        assert_eq!(c_atoi("abc"), 0);
        assert_eq!(c_atoi(""), 0);
        assert_eq!(c_atoi("4294967297"), 1);
        assert_eq!(c_atoi("99999999999999999999"), -1);
        assert_eq!(c_atoi("-99999999999999999999"), 0);
        assert_eq!(c_strtoul(" +0x1F", 0), Some(31));
        assert_eq!(c_strtoul("0x", 0), Some(0));
        assert_eq!(c_strtoul("0779", 0), Some(63));
        assert_eq!(c_strtoul("18446744073709551615", 10), Some(u64::MAX));
        assert_eq!(c_strtoul("18446744073709551616", 10), None);
        assert_eq!(c_strtoul(" -0", 10), None);
        assert_eq!(c_strtoul("z", 0), None);
    }
}
