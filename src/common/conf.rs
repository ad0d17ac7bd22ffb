//! `ctdb.conf`: the ini reader (`lib/util/tini.c`), the typed option store (`ctdb/common/conf.c`)
//! and every 4.17 option with its validation (`cluster/cluster_conf.c`, `database/database_conf.c`,
//! `event/event_conf.c`, `failover/failover_conf.c`, `server/legacy_conf.c`,
//! `common/logging_conf.c`).
//!
//! Behaviour that matches stock (checked against `ctdb-config validate`/`dump` 4.17.12):
//! * section names are matched case-insensitively, option names case-sensitively;
//! * runs of blanks inside a line collapse to their first character, so `leader   timeout` is
//!   `leader timeout` but `leader<TAB>timeout` is not; lines ending in `\` continue;
//! * only whole-line comments exist (`#` or `;` first); `x = 1 # c` has the value `1 # c`;
//! * a line without `=` is ignored; an empty value is an error;
//! * integers are read like `strtol(.., 0)` and trailing text is ignored (`7x` is 7,
//!   `abc` is 0); negative or larger than `INT_MAX` is an error;
//! * booleans are `true`/`yes`/`false`/`no` in any case;
//! * a value equal to the option's default is skipped entirely (not validated, not marked as
//!   set) — so a later `key = <default>` does not undo an earlier non-default value;
//! * unknown sections and options are ignored by ctdbd (we return them as warnings).
//!
//! Deliberate difference: a line stock's ini reader cannot parse (`= value`, `[section`
//! without `]`) makes stock silently fall back to *all defaults*; we report an error instead.

use log::warn;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The stock ini reader, reproduced byte for byte so that keys, values and line joins come out
/// exactly as `tini_parse` hands them to its callbacks. Also used for `ctdb.tunables`.
pub mod ini {
    /// One logical line of an ini file. `line` is the 1-based file line where it starts.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum IniItem {
        Section {
            line: u32,
            name: String,
        },
        /// `value` is `None` when the line has no `=` at all.
        Param {
            line: u32,
            name: String,
            value: Option<String>,
        },
        /// Stock stops reading the file at such a line.
        SyntaxError {
            line: u32,
            text: String,
            reason: &'static str,
        },
    }

    /// C `isspace` in the C locale.
    pub(crate) fn is_space(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
    }

    /// Drops at most one blank at each end; the reader has already collapsed runs of blanks.
    fn trim_one_space(s: &[u8]) -> &[u8] {
        let s = match s.first() {
            Some(&b) if is_space(b) => &s[1..],
            _ => s,
        };
        match s.last() {
            Some(&b) if is_space(b) => &s[..s.len() - 1],
            _ => s,
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Splits `input` into sections and parameters. Comment and blank lines vanish; the result
    /// ends at the first syntax error, as `tini_parse` does.
    pub fn parse(input: &str) -> Vec<IniItem> {
        let bytes = input.as_bytes();
        let mut pos = 0usize;
        let mut line = 1u32;
        let mut items = Vec::new();

        loop {
            while pos < bytes.len() && bytes[pos] != b'\n' && is_space(bytes[pos]) {
                pos += 1;
            }
            let Some(&first) = bytes.get(pos) else {
                break;
            };
            if first == b'#' || first == b';' {
                match bytes[pos..].iter().position(|&b| b == b'\n') {
                    Some(offset) => {
                        pos += offset + 1;
                        line += 1;
                        continue;
                    }
                    None => break,
                }
            }
            if first == b'\n' {
                pos += 1;
                line += 1;
                continue;
            }

            let start_line = line;
            let mut buf: Vec<u8> = Vec::new();
            while let Some(&c) = bytes.get(pos) {
                pos += 1;
                if c == b'\n' {
                    line += 1;
                    let n = buf.len();
                    if n > 0 && buf[n - 1] == b'\\' {
                        buf.truncate(n - 1);
                        continue;
                    }
                    if n > 1 && buf[n - 2] == b'\\' && is_space(buf[n - 1]) {
                        buf.truncate(n - 2);
                        continue;
                    }
                    break;
                }
                if buf.last().is_some_and(|&last| is_space(last)) && is_space(c) {
                    continue;
                }
                buf.push(c);
            }
            // The C code works on NUL-terminated strings.
            if let Some(nul) = buf.iter().position(|&b| b == 0) {
                buf.truncate(nul);
            }
            if buf.is_empty() {
                continue;
            }

            if buf[0] == b'[' {
                match buf[1..].iter().position(|&b| b == b']') {
                    Some(end) => items.push(IniItem::Section {
                        line: start_line,
                        name: text(&buf[1..1 + end]),
                    }),
                    None => {
                        items.push(IniItem::SyntaxError {
                            line: start_line,
                            text: text(&buf),
                            reason: "section header without ']'",
                        });
                        break;
                    }
                }
                continue;
            }

            match buf.iter().position(|&b| b == b'=') {
                None => items.push(IniItem::Param {
                    line: start_line,
                    name: text(trim_one_space(&buf)),
                    value: None,
                }),
                Some(0) => {
                    items.push(IniItem::SyntaxError {
                        line: start_line,
                        text: text(&buf),
                        reason: "option without a name",
                    });
                    break;
                }
                Some(eq) => items.push(IniItem::Param {
                    line: start_line,
                    name: text(trim_one_space(&buf[..eq])),
                    value: Some(text(trim_one_space(&buf[eq + 1..]))),
                }),
            }
        }
        items
    }
}

// ---------------------------------------------------------------------------------------------
// Option table
// ---------------------------------------------------------------------------------------------

pub const SECTION_LOGGING: &str = "logging";
pub const SECTION_CLUSTER: &str = "cluster";
pub const SECTION_DATABASE: &str = "database";
pub const SECTION_EVENT: &str = "event";
pub const SECTION_FAILOVER: &str = "failover";
pub const SECTION_LEGACY: &str = "legacy";

/// Sections in the order ctdbd defines them (and `ctdb-config dump` prints them).
pub const SECTIONS: [&str; 6] = [
    SECTION_LOGGING,
    SECTION_CLUSTER,
    SECTION_DATABASE,
    SECTION_EVENT,
    SECTION_FAILOVER,
    SECTION_LEGACY,
];

/// Compiled-in directories of the Debian 4.17.12 build (digest §6.1).
pub const DEFAULT_LOG_LOCATION: &str = "file:/var/log/ctdb/log.ctdb";
pub const DEFAULT_VOLATILE_DB_DIR: &str = "/var/lib/ctdb/volatile";
pub const DEFAULT_PERSISTENT_DB_DIR: &str = "/var/lib/ctdb/persistent";
pub const DEFAULT_STATE_DB_DIR: &str = "/var/lib/ctdb/state";

/// ctdbd logs at NOTICE by default; `ctdb-config`, `ctdb-eventd` and the other tools at ERROR.
pub const CTDBD_DEFAULT_LOG_LEVEL: &str = "NOTICE";
pub const TOOL_DEFAULT_LOG_LEVEL: &str = "ERROR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfType {
    String,
    Integer,
    Boolean,
}

impl ConfType {
    pub fn name(self) -> &'static str {
        match self {
            ConfType::String => "string",
            ConfType::Integer => "integer",
            ConfType::Boolean => "boolean",
        }
    }
}

/// A compiled-in default. String options without a default are unset (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfDefault {
    Unset,
    String(&'static str),
    Integer(i32),
    Boolean(bool),
}

impl fmt::Display for ConfDefault {
    /// The text `ctdb-config dump` prints after `key = `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfDefault::Unset => Ok(()),
            ConfDefault::String(s) => f.write_str(s),
            ConfDefault::Integer(i) => write!(f, "{i}"),
            ConfDefault::Boolean(b) => f.write_str(if b { "true" } else { "false" }),
        }
    }
}

/// What is checked beyond the type conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    LogLocation,
    LogLevel,
    Transport,
    NodeAddress,
    DeprecatedAlias(&'static str),
    PositiveInteger,
    DatabaseDirectory,
    EtcScript,
}

/// One option as ctdbd defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfOptionSpec {
    pub section: &'static str,
    pub key: &'static str,
    pub ty: ConfType,
    /// ctdbd's default (for `[logging] log level` the tools use [`TOOL_DEFAULT_LOG_LEVEL`]).
    pub default: ConfDefault,
    check: Check,
}

const fn option(
    section: &'static str,
    key: &'static str,
    ty: ConfType,
    default: ConfDefault,
    check: Check,
) -> ConfOptionSpec {
    ConfOptionSpec {
        section,
        key,
        ty,
        default,
        check,
    }
}

/// Every 4.17 option, in definition order (the order of `ctdb-config dump`).
pub const CONF_OPTIONS: &[ConfOptionSpec] = &[
    option(
        SECTION_LOGGING,
        "location",
        ConfType::String,
        ConfDefault::String(DEFAULT_LOG_LOCATION),
        Check::LogLocation,
    ),
    option(
        SECTION_LOGGING,
        "log level",
        ConfType::String,
        ConfDefault::String(CTDBD_DEFAULT_LOG_LEVEL),
        Check::LogLevel,
    ),
    option(
        SECTION_CLUSTER,
        "transport",
        ConfType::String,
        ConfDefault::String("tcp"),
        Check::Transport,
    ),
    option(
        SECTION_CLUSTER,
        "node address",
        ConfType::String,
        ConfDefault::Unset,
        Check::NodeAddress,
    ),
    option(
        SECTION_CLUSTER,
        "cluster lock",
        ConfType::String,
        ConfDefault::Unset,
        Check::None,
    ),
    option(
        SECTION_CLUSTER,
        "recovery lock",
        ConfType::String,
        ConfDefault::Unset,
        Check::DeprecatedAlias("cluster lock"),
    ),
    option(
        SECTION_CLUSTER,
        "leader timeout",
        ConfType::Integer,
        ConfDefault::Integer(5),
        Check::PositiveInteger,
    ),
    option(
        SECTION_CLUSTER,
        "leader capability",
        ConfType::Boolean,
        ConfDefault::Boolean(true),
        Check::None,
    ),
    option(
        SECTION_DATABASE,
        "volatile database directory",
        ConfType::String,
        ConfDefault::String(DEFAULT_VOLATILE_DB_DIR),
        Check::DatabaseDirectory,
    ),
    option(
        SECTION_DATABASE,
        "persistent database directory",
        ConfType::String,
        ConfDefault::String(DEFAULT_PERSISTENT_DB_DIR),
        Check::DatabaseDirectory,
    ),
    option(
        SECTION_DATABASE,
        "state database directory",
        ConfType::String,
        ConfDefault::String(DEFAULT_STATE_DB_DIR),
        Check::DatabaseDirectory,
    ),
    option(
        SECTION_DATABASE,
        "lock debug script",
        ConfType::String,
        ConfDefault::Unset,
        Check::EtcScript,
    ),
    option(
        SECTION_DATABASE,
        "tdb mutexes",
        ConfType::Boolean,
        ConfDefault::Boolean(true),
        Check::None,
    ),
    option(
        SECTION_EVENT,
        "debug script",
        ConfType::String,
        ConfDefault::Unset,
        Check::EtcScript,
    ),
    option(
        SECTION_FAILOVER,
        "disabled",
        ConfType::Boolean,
        ConfDefault::Boolean(false),
        Check::None,
    ),
    option(
        SECTION_LEGACY,
        "realtime scheduling",
        ConfType::Boolean,
        ConfDefault::Boolean(true),
        Check::None,
    ),
    option(
        SECTION_LEGACY,
        "lmaster capability",
        ConfType::Boolean,
        ConfDefault::Boolean(true),
        Check::None,
    ),
    option(
        SECTION_LEGACY,
        "start as stopped",
        ConfType::Boolean,
        ConfDefault::Boolean(false),
        Check::None,
    ),
    option(
        SECTION_LEGACY,
        "start as disabled",
        ConfType::Boolean,
        ConfDefault::Boolean(false),
        Check::None,
    ),
    option(
        SECTION_LEGACY,
        "script log level",
        ConfType::String,
        ConfDefault::String("ERROR"),
        Check::LogLevel,
    ),
];

// Indices into CONF_OPTIONS, for the typed view.
const OPT_LOCATION: usize = 0;
const OPT_LOG_LEVEL: usize = 1;
const OPT_TRANSPORT: usize = 2;
const OPT_NODE_ADDRESS: usize = 3;
const OPT_CLUSTER_LOCK: usize = 4;
const OPT_RECOVERY_LOCK: usize = 5;
const OPT_LEADER_TIMEOUT: usize = 6;
const OPT_LEADER_CAPABILITY: usize = 7;
const OPT_VOLATILE_DIR: usize = 8;
const OPT_PERSISTENT_DIR: usize = 9;
const OPT_STATE_DIR: usize = 10;
const OPT_LOCK_DEBUG_SCRIPT: usize = 11;
const OPT_TDB_MUTEXES: usize = 12;
const OPT_EVENT_DEBUG_SCRIPT: usize = 13;
const OPT_FAILOVER_DISABLED: usize = 14;
const OPT_REALTIME_SCHEDULING: usize = 15;
const OPT_LMASTER_CAPABILITY: usize = 16;
const OPT_START_AS_STOPPED: usize = 17;
const OPT_START_AS_DISABLED: usize = 18;
const OPT_SCRIPT_LOG_LEVEL: usize = 19;

/// Looks an option up the way conf.c does: section ignoring case, key exactly.
pub fn find_option(section: &str, key: &str) -> Option<&'static ConfOptionSpec> {
    CONF_OPTIONS
        .iter()
        .find(|o| o.section.eq_ignore_ascii_case(section) && o.key == key)
}

fn option_index(section: &str, key: &str) -> Option<usize> {
    CONF_OPTIONS
        .iter()
        .position(|o| o.section.eq_ignore_ascii_case(section) && o.key == key)
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfValue {
    String(Option<String>),
    Integer(i32),
    Boolean(bool),
}

impl ConfValue {
    fn from_default(default: ConfDefault) -> Self {
        match default {
            ConfDefault::Unset => ConfValue::String(None),
            ConfDefault::String(s) => ConfValue::String(Some(s.to_string())),
            ConfDefault::Integer(i) => ConfValue::Integer(i),
            ConfDefault::Boolean(b) => ConfValue::Boolean(b),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            ConfValue::String(s) => s.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for ConfValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfValue::String(s) => f.write_str(s.as_deref().unwrap_or("")),
            ConfValue::Integer(i) => write!(f, "{i}"),
            ConfValue::Boolean(b) => f.write_str(if *b { "true" } else { "false" }),
        }
    }
}

/// `strtol(s, &end, 0)`: the value (saturated like glibc) and how many bytes were used; no
/// digits at all gives `(0, 0)`.
fn strtol_prefix(s: &str) -> (i64, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && ini::is_space(b[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        negative = b[i] == b'-';
        i += 1;
    }
    let mut radix = 10u32;
    if b.get(i) == Some(&b'0') {
        if matches!(b.get(i + 1), Some(b'x' | b'X'))
            && b.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            radix = 16;
            i += 2;
        } else {
            radix = 8;
        }
    }
    let digits_start = i;
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    while let Some(d) = b.get(i).and_then(|&c| char::from(c).to_digit(radix)) {
        match magnitude
            .checked_mul(u64::from(radix))
            .and_then(|m| m.checked_add(u64::from(d)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        i += 1;
    }
    if i == digits_start {
        return (0, 0);
    }
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX.unsigned_abs()
    };
    let value = if overflow || magnitude > limit {
        if negative {
            i64::MIN
        } else {
            i64::MAX
        }
    } else if negative {
        0i64.saturating_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).unwrap_or(i64::MAX)
    };
    (value, i)
}

/// conf.c `string_to_integer`. Returns the value and whether text was ignored after the number.
fn string_to_integer(s: &str) -> Option<(i32, bool)> {
    let (value, used) = strtol_prefix(s);
    let value = i32::try_from(value).ok().filter(|v| *v >= 0)?;
    Some((value, used < s.len()))
}

fn string_to_boolean(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Log levels and locations (common/logging.c)
// ---------------------------------------------------------------------------------------------

/// A Samba debug level as ctdb uses it: ERROR 0, WARNING 1, NOTICE 3, INFO 5, DEBUG 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DebugLevel(pub i32);

/// `log_string_map` in common/logging.c: index = level.
const LEVEL_NAMES: [&str; 11] = [
    "ERROR", "WARNING", "WARNING", "NOTICE", "NOTICE", "INFO", "INFO", "INFO", "INFO", "INFO",
    "DEBUG",
];

impl DebugLevel {
    pub const ERR: DebugLevel = DebugLevel(0);
    pub const WARNING: DebugLevel = DebugLevel(1);
    pub const NOTICE: DebugLevel = DebugLevel(3);
    pub const INFO: DebugLevel = DebugLevel(5);
    pub const DEBUG: DebugLevel = DebugLevel(10);

    /// `debug_level_parse`: a number 0-10 (only the leading digits count, like `atoi`), or a
    /// case-insensitive prefix of a level name (`warn`, `E`).
    pub fn parse(s: &str) -> Option<DebugLevel> {
        let bytes = s.as_bytes();
        if bytes.first().is_some_and(u8::is_ascii_digit) {
            let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let level: u64 = s[..digits].parse().unwrap_or(u64::MAX);
            return usize::try_from(level)
                .ok()
                .filter(|&l| l < LEVEL_NAMES.len())
                .and_then(|l| i32::try_from(l).ok())
                .map(DebugLevel);
        }
        const BY_NAME: [(&str, i32); 5] = [
            ("ERROR", 0),
            ("WARNING", 1),
            ("NOTICE", 3),
            ("INFO", 5),
            ("DEBUG", 10),
        ];
        BY_NAME
            .iter()
            .find(|(name, _)| {
                name.len() >= s.len() && name.as_bytes()[..s.len()].eq_ignore_ascii_case(bytes)
            })
            .map(|&(_, level)| DebugLevel(level))
    }

    /// `debug_level_to_string`.
    pub fn name(self) -> &'static str {
        usize::try_from(self.0)
            .ok()
            .and_then(|i| LEVEL_NAMES.get(i))
            .copied()
            .unwrap_or("UNKNOWN")
    }
}

impl fmt::Display for DebugLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogMethod {
    /// `syslog`: the C library's syslog().
    Native,
    /// `syslog:nonblocking`: datagrams to /dev/log, dropped when it is full.
    Nonblocking,
    /// `syslog:udp`: RFC 3164 to 127.0.0.1:514.
    Udp,
    /// `syslog:udp-rfc5424`.
    UdpRfc5424,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// `file` or `file:-`.
    Stderr,
    File(PathBuf),
    Syslog(SyslogMethod),
}

impl LogLocation {
    /// `log_backend_parse` + the backend's validate, minus the file system check. The text is
    /// split with `strtok(":")`: empty fields vanish and only the first two fields count, so
    /// `file:/a:b` logs to `/a`.
    pub fn parse(s: &str) -> Option<LogLocation> {
        let mut fields = s.split(':').filter(|f| !f.is_empty());
        let backend = fields.next()?;
        let option = fields.next();
        match (backend, option) {
            ("file", None | Some("-")) => Some(LogLocation::Stderr),
            ("file", Some(path)) => Some(LogLocation::File(PathBuf::from(path))),
            ("syslog", None) => Some(LogLocation::Syslog(SyslogMethod::Native)),
            ("syslog", Some("nonblocking")) => Some(LogLocation::Syslog(SyslogMethod::Nonblocking)),
            ("syslog", Some("udp")) => Some(LogLocation::Syslog(SyslogMethod::Udp)),
            ("syslog", Some("udp-rfc5424")) => Some(LogLocation::Syslog(SyslogMethod::UdpRfc5424)),
            _ => None,
        }
    }
}

/// POSIX `dirname`.
fn dirname(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "." } else { "/" };
    }
    match trimmed.rfind('/') {
        None => ".",
        Some(slash) => {
            let parent = trimmed[..slash].trim_end_matches('/');
            if parent.is_empty() {
                "/"
            } else {
                parent
            }
        }
    }
}

/// The last component, as glibc's `basename` (the POSIX one, which ignores trailing slashes).
fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "." } else { "/" };
    }
    match trimmed.rfind('/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and warnings
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfErrorKind {
    Io(String),
    Syntax {
        text: String,
        reason: &'static str,
    },
    EmptyValue {
        section: &'static str,
        key: &'static str,
    },
    InvalidValue {
        section: &'static str,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// A file the daemon must refuse to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub file: String,
    /// 0 when the error is not tied to a line (I/O).
    pub line: u32,
    pub kind: ConfErrorKind,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ConfErrorKind::Io(e) => write!(f, "{}: {}", self.file, e),
            ConfErrorKind::Syntax { text, reason } => {
                write!(f, "{}:{}: {}: \"{}\"", self.file, self.line, reason, text)
            }
            ConfErrorKind::EmptyValue { section, key } => write!(
                f,
                "{}:{}: empty value for [{}] -> \"{}\"",
                self.file, self.line, section, key
            ),
            ConfErrorKind::InvalidValue {
                section,
                key,
                value,
                reason,
            } => write!(
                f,
                "{}:{}: invalid value [{}] -> \"{}\" = \"{}\": {}",
                self.file, self.line, section, key, value, reason
            ),
        }
    }
}

impl std::error::Error for ConfError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfWarningKind {
    UnknownSection {
        section: String,
    },
    UnknownOption {
        section: String,
        key: String,
    },
    OptionOutsideSection {
        key: String,
    },
    /// A line with no `=`; stock skips it without a word.
    LineWithoutValue {
        text: String,
    },
    Deprecated {
        section: String,
        key: String,
        replacement: &'static str,
    },
    /// Stock reads `7x` as 7 without complaint.
    IntegerTrailingText {
        section: String,
        key: String,
        value: String,
        used: i32,
    },
}

/// Something ctdbd accepts but `ctdb-config validate` (or a careful reader) would not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfWarning {
    pub file: String,
    pub line: u32,
    pub kind: ConfWarningKind,
}

impl ConfWarning {
    /// True for the cases `ctdb-config validate` rejects (unknown sections and options).
    pub fn rejected_by_validate(&self) -> bool {
        matches!(
            self.kind,
            ConfWarningKind::UnknownSection { .. }
                | ConfWarningKind::UnknownOption { .. }
                | ConfWarningKind::OptionOutsideSection { .. }
        )
    }
}

impl fmt::Display for ConfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        match &self.kind {
            ConfWarningKind::UnknownSection { section } => {
                write!(f, "ignoring unknown section [{section}]")
            }
            ConfWarningKind::UnknownOption { section, key } => {
                write!(f, "ignoring unknown option [{section}] -> \"{key}\"")
            }
            ConfWarningKind::OptionOutsideSection { key } => {
                write!(f, "ignoring option \"{key}\" outside any section")
            }
            ConfWarningKind::LineWithoutValue { text } => {
                write!(f, "ignoring line without '=': \"{text}\"")
            }
            ConfWarningKind::Deprecated {
                section,
                key,
                replacement,
            } => write!(
                f,
                "configuration option [{section}] -> {key} is deprecated, use \"{replacement}\""
            ),
            ConfWarningKind::IntegerTrailingText {
                section,
                key,
                value,
                used,
            } => write!(
                f,
                "[{section}] -> \"{key}\" = \"{value}\" is read as {used}; the rest is ignored"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store (conf.c) and the typed view
// ---------------------------------------------------------------------------------------------

/// The untyped values, one per [`CONF_OPTIONS`] entry, remembering which were set and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfStore {
    file: String,
    values: Vec<ConfValue>,
    set_at: Vec<Option<u32>>,
}

impl ConfStore {
    fn defaults(log_level_default: &str) -> Self {
        let values = CONF_OPTIONS
            .iter()
            .enumerate()
            .map(|(i, o)| {
                if i == OPT_LOG_LEVEL {
                    ConfValue::String(Some(log_level_default.to_string()))
                } else {
                    ConfValue::from_default(o.default)
                }
            })
            .collect();
        ConfStore {
            file: String::new(),
            values,
            set_at: vec![None; CONF_OPTIONS.len()],
        }
    }

    /// `conf_get_*`: the value and whether it is the default.
    pub fn get(&self, section: &str, key: &str) -> Option<(&ConfValue, bool)> {
        let i = option_index(section, key)?;
        Some((&self.values[i], self.set_at[i].is_none()))
    }

    /// The line that set an option, if the file set it to something other than the default.
    pub fn line_of(&self, section: &str, key: &str) -> Option<u32> {
        option_index(section, key).and_then(|i| self.set_at[i])
    }

    /// `conf_dump`: exactly what `ctdb-config dump` prints.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for (i, o) in CONF_OPTIONS.iter().enumerate() {
            if o.section != section {
                section = o.section;
                out.push_str(&format!("[{section}]\n"));
            }
            let value = &self.values[i];
            let commented = self.set_at[i].is_none() || matches!(value, ConfValue::String(None));
            let hash = if commented { "# " } else { "" };
            out.push_str(&format!("\t{hash}{} = {value}\n", o.key));
        }
        out
    }

    fn string(&self, i: usize) -> Option<&str> {
        self.values[i].as_str()
    }

    fn integer(&self, i: usize) -> i32 {
        match self.values[i] {
            ConfValue::Integer(v) => v,
            _ => 0,
        }
    }

    fn boolean(&self, i: usize) -> bool {
        matches!(self.values[i], ConfValue::Boolean(true))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConf {
    pub location: LogLocation,
    pub log_level: DebugLevel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConf {
    pub transport: String,
    /// Unset: use the first nodes-file address that can be bound.
    pub node_address: Option<IpAddr>,
    pub cluster_lock: Option<String>,
    /// Deprecated spelling of `cluster lock`; `cluster lock` wins when both are set.
    pub recovery_lock: Option<String>,
    /// Seconds.
    pub leader_timeout: u32,
    pub leader_capability: bool,
}

impl ClusterConf {
    /// The lock ctdbd uses (ctdbd.c: `cluster lock`, else `recovery lock`).
    pub fn effective_cluster_lock(&self) -> Option<&str> {
        self.cluster_lock
            .as_deref()
            .or(self.recovery_lock.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConf {
    pub volatile_dir: PathBuf,
    pub persistent_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Exported as `CTDB_DEBUG_LOCKS`; only its basename counts, looked up in the etc dir.
    pub lock_debug_script: Option<String>,
    pub tdb_mutexes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventConf {
    /// Run by eventd when a script times out; basename looked up in the etc dir.
    pub debug_script: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConf {
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyConf {
    pub realtime_scheduling: bool,
    pub lmaster_capability: bool,
    pub start_as_stopped: bool,
    pub start_as_disabled: bool,
    pub script_log_level: DebugLevel,
}

/// A validated `ctdb.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtdbConf {
    pub logging: LoggingConf,
    pub cluster: ClusterConf,
    pub database: DatabaseConf,
    pub event: EventConf,
    pub failover: FailoverConf,
    pub legacy: LegacyConf,
    /// The raw values behind the fields above, for `dump`/`get` and file:line in later checks.
    pub store: ConfStore,
}

/// The result of reading a file that ctdbd would accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConf {
    pub conf: CtdbConf,
    pub warnings: Vec<ConfWarning>,
}

impl Default for CtdbConf {
    fn default() -> Self {
        CtdbConf::from_store(ConfStore::defaults(CTDBD_DEFAULT_LOG_LEVEL))
    }
}

impl CtdbConf {
    /// The defaults a tool (`ctdb-config`, `ctdb-eventd`) starts from: `log level` is ERROR.
    pub fn tool_defaults() -> Self {
        CtdbConf::from_store(ConfStore::defaults(TOOL_DEFAULT_LOG_LEVEL))
    }

    /// Parses a `ctdb.conf` with ctdbd's defaults. Pure: no file system checks (see
    /// [`CtdbConf::check_host`]).
    pub fn parse(text: &str, file_name: &str) -> Result<LoadedConf, ConfError> {
        Self::parse_with_log_level_default(text, file_name, CTDBD_DEFAULT_LOG_LEVEL)
    }

    pub fn parse_with_log_level_default(
        text: &str,
        file_name: &str,
        log_level_default: &str,
    ) -> Result<LoadedConf, ConfError> {
        let defaults = ConfStore::defaults(log_level_default);
        let mut store = defaults.clone();
        store.file = file_name.to_string();
        let mut warnings = Vec::new();
        let warn_at = |line: u32, kind: ConfWarningKind| ConfWarning {
            file: file_name.to_string(),
            line,
            kind,
        };
        let error_at = |line: u32, kind: ConfErrorKind| ConfError {
            file: file_name.to_string(),
            line,
            kind,
        };

        // None before the first section header; Some(None) inside an unknown section.
        let mut section: Option<Option<&'static str>> = None;
        for item in ini::parse(text) {
            match item {
                ini::IniItem::SyntaxError { line, text, reason } => {
                    return Err(error_at(line, ConfErrorKind::Syntax { text, reason }));
                }
                ini::IniItem::Section { line, name } => {
                    let known = SECTIONS
                        .iter()
                        .copied()
                        .find(|s| s.eq_ignore_ascii_case(&name));
                    if known.is_none() {
                        warnings.push(warn_at(
                            line,
                            ConfWarningKind::UnknownSection { section: name },
                        ));
                    }
                    section = Some(known);
                }
                ini::IniItem::Param {
                    line,
                    name,
                    value: None,
                } => warnings.push(warn_at(
                    line,
                    ConfWarningKind::LineWithoutValue { text: name },
                )),
                ini::IniItem::Param {
                    line,
                    name,
                    value: Some(value),
                } => {
                    let section_name = match section {
                        None => {
                            warnings.push(warn_at(
                                line,
                                ConfWarningKind::OptionOutsideSection { key: name },
                            ));
                            continue;
                        }
                        // Already warned about the section itself.
                        Some(None) => continue,
                        Some(Some(s)) => s,
                    };
                    let Some(index) = option_index(section_name, &name) else {
                        warnings.push(warn_at(
                            line,
                            ConfWarningKind::UnknownOption {
                                section: section_name.to_string(),
                                key: name,
                            },
                        ));
                        continue;
                    };
                    let spec = &CONF_OPTIONS[index];
                    if value.is_empty() {
                        return Err(error_at(
                            line,
                            ConfErrorKind::EmptyValue {
                                section: spec.section,
                                key: spec.key,
                            },
                        ));
                    }
                    let invalid = |reason: &str| {
                        error_at(
                            line,
                            ConfErrorKind::InvalidValue {
                                section: spec.section,
                                key: spec.key,
                                value: value.clone(),
                                reason: reason.to_string(),
                            },
                        )
                    };
                    let new_value = match spec.ty {
                        ConfType::String => ConfValue::String(Some(value.clone())),
                        ConfType::Integer => {
                            let (number, trailing) = string_to_integer(&value)
                                .ok_or_else(|| invalid("not an integer from 0 to 2147483647"))?;
                            if trailing {
                                warnings.push(warn_at(
                                    line,
                                    ConfWarningKind::IntegerTrailingText {
                                        section: spec.section.to_string(),
                                        key: spec.key.to_string(),
                                        value: value.clone(),
                                        used: number,
                                    },
                                ));
                            }
                            ConfValue::Integer(number)
                        }
                        ConfType::Boolean => ConfValue::Boolean(
                            string_to_boolean(&value)
                                .ok_or_else(|| invalid("not a boolean (true, yes, false, no)"))?,
                        ),
                    };
                    // conf.c compares with the value in force before this load (the default)
                    // and skips validation and assignment when they are equal.
                    if new_value == defaults.values[index] {
                        continue;
                    }
                    if let Some(reason) = check_value(spec.check, &new_value) {
                        return Err(invalid(reason));
                    }
                    if let Check::DeprecatedAlias(replacement) = spec.check {
                        warnings.push(warn_at(
                            line,
                            ConfWarningKind::Deprecated {
                                section: spec.section.to_string(),
                                key: spec.key.to_string(),
                                replacement,
                            },
                        ));
                    }
                    store.values[index] = new_value;
                    store.set_at[index] = Some(line);
                }
            }
        }

        Ok(LoadedConf {
            conf: CtdbConf::from_store(store),
            warnings,
        })
    }

    /// The checks stock makes against the file system while loading, for options the file set:
    /// database directories exist, the log file's directory exists, debug scripts are
    /// executable regular files in `etc_dir` (only their basename counts).
    pub fn check_host(&self, etc_dir: &Path) -> Result<(), ConfError> {
        for (index, spec) in CONF_OPTIONS.iter().enumerate() {
            let Some(line) = self.store.set_at[index] else {
                continue;
            };
            let Some(value) = self.store.values[index].as_str() else {
                continue;
            };
            let problem = match spec.check {
                Check::LogLocation => match LogLocation::parse(value) {
                    Some(LogLocation::File(path)) => {
                        let dir = dirname(path.to_str().unwrap_or(""));
                        (!Path::new(dir).is_dir())
                            .then(|| format!("log directory \"{dir}\" does not exist"))
                    }
                    _ => None,
                },
                Check::DatabaseDirectory => (!Path::new(value).is_dir())
                    .then(|| format!("directory \"{value}\" does not exist")),
                Check::EtcScript => check_etc_script(etc_dir, value),
                _ => None,
            };
            if let Some(reason) = problem {
                return Err(ConfError {
                    file: self.store.file.clone(),
                    line,
                    kind: ConfErrorKind::InvalidValue {
                        section: spec.section,
                        key: spec.key,
                        value: value.to_string(),
                        reason,
                    },
                });
            }
        }
        Ok(())
    }

    /// Reads `path` as ctdbd does: a missing file means all defaults; then the file system
    /// checks with the file's directory as the etc dir. Warnings are logged and returned.
    pub fn load(path: &Path) -> Result<LoadedConf, ConfError> {
        let etc_dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::load_with(path, etc_dir, CTDBD_DEFAULT_LOG_LEVEL)
    }

    pub fn load_with(
        path: &Path,
        etc_dir: &Path,
        log_level_default: &str,
    ) -> Result<LoadedConf, ConfError> {
        let file_name = path.display().to_string();
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut store = ConfStore::defaults(log_level_default);
                store.file = file_name;
                return Ok(LoadedConf {
                    conf: CtdbConf::from_store(store),
                    warnings: Vec::new(),
                });
            }
            Err(e) => {
                return Err(ConfError {
                    file: file_name,
                    line: 0,
                    kind: ConfErrorKind::Io(e.to_string()),
                })
            }
        };
        let loaded = Self::parse_with_log_level_default(&text, &file_name, log_level_default)?;
        loaded.conf.check_host(etc_dir)?;
        for w in &loaded.warnings {
            warn!("{w}");
        }
        Ok(loaded)
    }

    fn from_store(store: ConfStore) -> Self {
        let level = |i: usize, fallback: DebugLevel| {
            store
                .string(i)
                .and_then(DebugLevel::parse)
                .unwrap_or(fallback)
        };
        let path = |i: usize| PathBuf::from(store.string(i).unwrap_or_default());
        let owned = |i: usize| store.string(i).map(str::to_string);
        CtdbConf {
            logging: LoggingConf {
                location: store
                    .string(OPT_LOCATION)
                    .and_then(LogLocation::parse)
                    .unwrap_or(LogLocation::Stderr),
                log_level: level(OPT_LOG_LEVEL, DebugLevel::NOTICE),
            },
            cluster: ClusterConf {
                transport: store.string(OPT_TRANSPORT).unwrap_or("tcp").to_string(),
                // ctdbd re-reads the address with `ctdb_parse_address`, which turns the
                // dotted IPv4-mapped form into IPv4.
                node_address: store
                    .string(OPT_NODE_ADDRESS)
                    .and_then(|a| super::nodes::parse_ip_literal(a).or_else(|| a.parse().ok())),
                cluster_lock: owned(OPT_CLUSTER_LOCK),
                recovery_lock: owned(OPT_RECOVERY_LOCK),
                leader_timeout: u32::try_from(store.integer(OPT_LEADER_TIMEOUT)).unwrap_or(5),
                leader_capability: store.boolean(OPT_LEADER_CAPABILITY),
            },
            database: DatabaseConf {
                volatile_dir: path(OPT_VOLATILE_DIR),
                persistent_dir: path(OPT_PERSISTENT_DIR),
                state_dir: path(OPT_STATE_DIR),
                lock_debug_script: owned(OPT_LOCK_DEBUG_SCRIPT),
                tdb_mutexes: store.boolean(OPT_TDB_MUTEXES),
            },
            event: EventConf {
                debug_script: owned(OPT_EVENT_DEBUG_SCRIPT),
            },
            failover: FailoverConf {
                disabled: store.boolean(OPT_FAILOVER_DISABLED),
            },
            legacy: LegacyConf {
                realtime_scheduling: store.boolean(OPT_REALTIME_SCHEDULING),
                lmaster_capability: store.boolean(OPT_LMASTER_CAPABILITY),
                start_as_stopped: store.boolean(OPT_START_AS_STOPPED),
                start_as_disabled: store.boolean(OPT_START_AS_DISABLED),
                script_log_level: level(OPT_SCRIPT_LOG_LEVEL, DebugLevel::ERR),
            },
            store,
        }
    }
}

/// The pure part of each option's validate function; `Some(reason)` rejects the value.
fn check_value(check: Check, value: &ConfValue) -> Option<&'static str> {
    match (check, value) {
        (Check::LogLocation, ConfValue::String(Some(s))) => {
            LogLocation::parse(s).is_none().then_some(
                "not a logging location (file:PATH, syslog, syslog:nonblocking, syslog:udp, \
             syslog:udp-rfc5424)",
            )
        }
        (Check::LogLevel, ConfValue::String(Some(s))) => DebugLevel::parse(s)
            .is_none()
            .then_some("not a log level (ERROR, WARNING, NOTICE, INFO, DEBUG or 0-10)"),
        (Check::Transport, ConfValue::String(Some(s))) => {
            (s != "tcp").then_some("the only supported transport is \"tcp\"")
        }
        (Check::NodeAddress, ConfValue::String(Some(s))) => s
            .parse::<IpAddr>()
            .is_err()
            .then_some("not an IPv4 or IPv6 address"),
        (Check::PositiveInteger, ConfValue::Integer(i)) => {
            (*i <= 0).then_some("must be greater than 0")
        }
        _ => None,
    }
}

fn check_etc_script(etc_dir: &Path, script: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = etc_dir.join(basename(script));
    match std::fs::metadata(&path) {
        Err(_) => Some(format!("script {} does not exist", path.display())),
        Ok(m) if !m.is_file() => Some(format!("script {} is not a file", path.display())),
        Ok(m) if m.permissions().mode() & 0o100 == 0 => {
            Some(format!("script {} is not executable", path.display()))
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::ini::IniItem;
    use super::*;

    fn parse(text: &str) -> Result<LoadedConf, ConfError> {
        CtdbConf::parse(text, "ctdb.conf")
    }

    fn param(line: u32, name: &str, value: &str) -> IniItem {
        IniItem::Param {
            line,
            name: name.into(),
            value: Some(value.into()),
        }
    }

    #[test]
    fn ini_collapses_blanks_and_trims_one() {
        let items = ini::parse("  [cluster]  \n\tleader    timeout   =   9  \nk=\tv\t\tw\n");
        assert_eq!(
            items,
            vec![
                IniItem::Section {
                    line: 1,
                    name: "cluster".into()
                },
                param(2, "leader timeout", "9"),
                param(3, "k", "v\tw"),
            ]
        );
    }

    #[test]
    fn ini_comments_blank_lines_and_line_numbers() {
        let text = "# c\n; c\n\n   \n  # indented comment\nx = 1 # not a comment\n\r\ny=2";
        assert_eq!(
            ini::parse(text),
            vec![param(6, "x", "1 # not a comment"), param(8, "y", "2")]
        );
    }

    #[test]
    fn ini_continuations() {
        assert_eq!(
            ini::parse("a = /a/b\\\n/c\nb = /a/b\\ \n  /c\nc=1\n"),
            vec![
                param(1, "a", "/a/b/c"),
                param(3, "b", "/a/b /c"),
                param(5, "c", "1")
            ]
        );
    }

    #[test]
    fn ini_crlf_and_missing_final_newline() {
        assert_eq!(
            ini::parse("[a]\r\nk = v\r\nz = last"),
            vec![
                IniItem::Section {
                    line: 1,
                    name: "a".into()
                },
                param(2, "k", "v"),
                param(3, "z", "last"),
            ]
        );
    }

    #[test]
    fn ini_syntax_errors_stop_reading() {
        let items = ini::parse("a=1\n= 2\nb=3\n");
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], IniItem::SyntaxError { line: 2, .. }));
        let items = ini::parse("[cluster\nb=3\n");
        assert!(matches!(items[0], IniItem::SyntaxError { line: 1, .. }));
        assert_eq!(
            ini::parse("novalue\n[s] trailing\n"),
            vec![
                IniItem::Param {
                    line: 1,
                    name: "novalue".into(),
                    value: None
                },
                IniItem::Section {
                    line: 2,
                    name: "s".into()
                }
            ]
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let loaded = parse("").unwrap();
        assert!(loaded.warnings.is_empty());
        assert_eq!(loaded.conf.store.values, CtdbConf::default().store.values);
        assert_eq!(loaded.conf.logging, CtdbConf::default().logging);
        let c = &loaded.conf;
        assert_eq!(
            c.logging.location,
            LogLocation::File("/var/log/ctdb/log.ctdb".into())
        );
        assert_eq!(c.logging.log_level, DebugLevel::NOTICE);
        assert_eq!(c.cluster.transport, "tcp");
        assert_eq!(c.cluster.node_address, None);
        assert_eq!(c.cluster.effective_cluster_lock(), None);
        assert_eq!(c.cluster.leader_timeout, 5);
        assert!(c.cluster.leader_capability);
        assert_eq!(c.database.volatile_dir, Path::new("/var/lib/ctdb/volatile"));
        assert_eq!(
            c.database.persistent_dir,
            Path::new("/var/lib/ctdb/persistent")
        );
        assert_eq!(c.database.state_dir, Path::new("/var/lib/ctdb/state"));
        assert_eq!(c.database.lock_debug_script, None);
        assert!(c.database.tdb_mutexes);
        assert_eq!(c.event.debug_script, None);
        assert!(!c.failover.disabled);
        assert!(c.legacy.realtime_scheduling);
        assert!(c.legacy.lmaster_capability);
        assert!(!c.legacy.start_as_stopped);
        assert!(!c.legacy.start_as_disabled);
        assert_eq!(c.legacy.script_log_level, DebugLevel::ERR);
    }

    /// The output of stock `ctdb-config dump` for an empty file (tool defaults: ERROR).
    const STOCK_DEFAULT_DUMP: &str = "[logging]
\t# location = file:/var/log/ctdb/log.ctdb
\t# log level = ERROR
[cluster]
\t# transport = tcp
\t# node address = 
\t# cluster lock = 
\t# recovery lock = 
\t# leader timeout = 5
\t# leader capability = true
[database]
\t# volatile database directory = /var/lib/ctdb/volatile
\t# persistent database directory = /var/lib/ctdb/persistent
\t# state database directory = /var/lib/ctdb/state
\t# lock debug script = 
\t# tdb mutexes = true
[event]
\t# debug script = 
[failover]
\t# disabled = false
[legacy]
\t# realtime scheduling = true
\t# lmaster capability = true
\t# start as stopped = false
\t# start as disabled = false
\t# script log level = ERROR
";

    #[test]
    fn dump_of_defaults_matches_stock() {
        assert_eq!(CtdbConf::tool_defaults().store.dump(), STOCK_DEFAULT_DUMP);
    }

    #[test]
    fn typical_test_cluster_file() {
        let text = "\
[logging]
\tlocation = file:/tmp/n0/log.ctdb
\tlog level = INFO
[cluster]
\tcluster lock = !/usr/libexec/ctdb/ctdb_mutex_fcntl_helper /tmp/shared/.ctdb/cluster.lock
\tnode address = 127.0.0.1
[database]
\tvolatile database directory = /tmp/n0/db/volatile
\tpersistent database directory = /tmp/n0/db/persistent
\tstate database directory = /tmp/n0/db/state
[failover]
\tdisabled = true
[event]
\tdebug script = debug-hung-script.sh
";
        let loaded = parse(text).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.conf;
        assert_eq!(
            c.logging.location,
            LogLocation::File("/tmp/n0/log.ctdb".into())
        );
        assert_eq!(c.logging.log_level, DebugLevel::INFO);
        assert_eq!(
            c.cluster.effective_cluster_lock(),
            Some("!/usr/libexec/ctdb/ctdb_mutex_fcntl_helper /tmp/shared/.ctdb/cluster.lock")
        );
        assert_eq!(c.cluster.node_address, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(c.database.state_dir, Path::new("/tmp/n0/db/state"));
        assert!(c.failover.disabled);
        assert_eq!(
            c.event.debug_script.as_deref(),
            Some("debug-hung-script.sh")
        );
        assert_eq!(c.store.line_of("cluster", "node address"), Some(6));
        assert_eq!(c.store.line_of("cluster", "transport"), None);
        let dump = c.store.dump();
        assert!(dump.contains("\tlog level = INFO\n"));
        assert!(dump.contains("\t# transport = tcp\n"));
    }

    #[test]
    fn section_names_ignore_case_keys_do_not() {
        let loaded = parse("[FailOver]\ndisabled = YES\n").unwrap();
        assert!(loaded.conf.failover.disabled);
        let loaded = parse("[failover]\nDisabled = true\n").unwrap();
        assert!(!loaded.conf.failover.disabled);
        assert_eq!(
            loaded.warnings[0].kind,
            ConfWarningKind::UnknownOption {
                section: "failover".into(),
                key: "Disabled".into()
            }
        );
        assert!(loaded.warnings[0].rejected_by_validate());
    }

    #[test]
    fn unknown_sections_and_keys_are_warnings() {
        let text =
            "stray = 1\n[foo]\nbar = 8\n[cluster]\nbar = 8\nleader timeout = 9\n[ cluster ]\n";
        let loaded = parse(text).unwrap();
        assert_eq!(loaded.conf.cluster.leader_timeout, 9);
        let kinds: Vec<_> = loaded.warnings.iter().map(|w| (w.line, &w.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (
                    1,
                    &ConfWarningKind::OptionOutsideSection {
                        key: "stray".into()
                    }
                ),
                (
                    2,
                    &ConfWarningKind::UnknownSection {
                        section: "foo".into()
                    }
                ),
                (
                    5,
                    &ConfWarningKind::UnknownOption {
                        section: "cluster".into(),
                        key: "bar".into()
                    }
                ),
                (
                    7,
                    &ConfWarningKind::UnknownSection {
                        section: " cluster ".into()
                    }
                ),
            ]
        );
        assert_eq!(
            loaded.warnings[2].to_string(),
            "ctdb.conf:5: ignoring unknown option [cluster] -> \"bar\""
        );
    }

    fn invalid(text: &str) -> ConfError {
        match parse(text) {
            Err(e) => e,
            Ok(l) => panic!("accepted {text:?}: {:?}", l.conf),
        }
    }

    #[test]
    fn bad_boolean() {
        for v in ["1", "on", "truee", "y"] {
            let e = invalid(&format!("[failover]\n\ndisabled = {v}\n"));
            assert_eq!(e.line, 3);
            assert_eq!(
                e.to_string(),
                format!(
                    "ctdb.conf:3: invalid value [failover] -> \"disabled\" = \"{v}\": not a \
                     boolean (true, yes, false, no)"
                )
            );
        }
        assert!(parse("[legacy]\nstart as stopped = No\n").is_ok());
    }

    #[test]
    fn integers_read_like_strtol() {
        let timeout = |v: &str| {
            parse(&format!("[cluster]\nleader timeout = {v}\n"))
                .map(|l| (l.conf.cluster.leader_timeout, l.warnings.len()))
        };
        assert_eq!(timeout("12").unwrap(), (12, 0));
        assert_eq!(timeout("0x10").unwrap(), (16, 0));
        assert_eq!(timeout("010").unwrap(), (8, 0));
        assert_eq!(timeout("7x").unwrap(), (7, 1));
        assert_eq!(timeout("9 # comment").unwrap(), (9, 1));
        // "abc" reads as 0, which the leader timeout check rejects.
        let e = timeout("abc").unwrap_err();
        assert!(e.to_string().contains("must be greater than 0"), "{e}");
        assert!(e.to_string().contains("\"abc\""), "{e}");
        for bad in ["-1", "99999999999", "2147483648", "0"] {
            assert!(timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(timeout("2147483647").unwrap(), (2_147_483_647, 0));
    }

    #[test]
    fn empty_value_is_an_error_missing_equals_is_ignored() {
        let e = invalid("[logging]\nlog level =   \n");
        assert_eq!(
            e.kind,
            ConfErrorKind::EmptyValue {
                section: "logging",
                key: "log level"
            }
        );
        assert_eq!(e.line, 2);
        let loaded = parse("[cluster]\nleader timeout\n").unwrap();
        assert!(matches!(
            loaded.warnings[0].kind,
            ConfWarningKind::LineWithoutValue { .. }
        ));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = invalid("[cluster]\nleader timeout = 8\n= 9\n");
        assert_eq!(e.line, 3);
        assert!(matches!(e.kind, ConfErrorKind::Syntax { .. }));
        let e = invalid("\n[cluster\n");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn transport_and_node_address() {
        assert!(parse("[cluster]\ntransport = tcp\n").is_ok());
        for t in ["TCP", "ib", "tcp extra"] {
            invalid(&format!("[cluster]\ntransport = {t}\n"));
        }
        let mapped = parse("[cluster]\nnode address = ::ffff:1.2.3.4\n").unwrap();
        assert_eq!(
            mapped.conf.cluster.node_address,
            Some("1.2.3.4".parse().unwrap())
        );
        for a in ["10.0.0.1", "fd00::1", "::ffff:1.2.3.4", " 10.0.0.1 "] {
            let loaded = parse(&format!("[cluster]\nnode address = {a}\n")).unwrap();
            assert!(loaded.conf.cluster.node_address.is_some(), "{a}");
        }
        for a in [
            "fe80::1%lo",
            "10.0.0",
            "010.0.0.1",
            "host.example",
            "[fd00::1]",
        ] {
            let e = invalid(&format!("[cluster]\nnode address = {a}\n"));
            assert!(e.to_string().contains("not an IPv4 or IPv6 address"));
        }
    }

    #[test]
    fn recovery_lock_is_a_deprecated_alias() {
        let loaded = parse("[cluster]\nrecovery lock = /x/lock\n").unwrap();
        assert_eq!(
            loaded.conf.cluster.effective_cluster_lock(),
            Some("/x/lock")
        );
        assert!(matches!(
            loaded.warnings[0].kind,
            ConfWarningKind::Deprecated {
                replacement: "cluster lock",
                ..
            }
        ));
        assert!(!loaded.warnings[0].rejected_by_validate());
        let loaded = parse("[cluster]\nrecovery lock = /old\ncluster lock = /new\n").unwrap();
        assert_eq!(loaded.conf.cluster.effective_cluster_lock(), Some("/new"));
    }

    #[test]
    fn log_levels() {
        let cases = [
            ("ERROR", 0),
            ("error", 0),
            ("E", 0),
            ("WARN", 1),
            ("warning", 1),
            ("NOTICE", 3),
            ("info", 5),
            ("DEBUG", 10),
            ("0", 0),
            ("10", 10),
            ("3x", 3),
            ("2", 2),
        ];
        for (text, level) in cases {
            assert_eq!(DebugLevel::parse(text), Some(DebugLevel(level)), "{text}");
            let loaded = parse(&format!("[logging]\nlog level = {text}\n")).unwrap();
            assert_eq!(loaded.conf.logging.log_level, DebugLevel(level));
        }
        for bad in ["DEBUGX", "11", "-1", "DEBUG 2", "verbose"] {
            assert_eq!(DebugLevel::parse(bad), None, "{bad}");
            invalid(&format!("[logging]\nlog level = {bad}\n"));
            invalid(&format!("[legacy]\nscript log level = {bad}\n"));
        }
        assert_eq!(DebugLevel(2).name(), "WARNING");
        assert_eq!(DebugLevel(7).name(), "INFO");
        assert_eq!(DebugLevel(11).name(), "UNKNOWN");
    }

    #[test]
    fn log_locations() {
        let ok = [
            ("syslog", LogLocation::Syslog(SyslogMethod::Native)),
            ("syslog:", LogLocation::Syslog(SyslogMethod::Native)),
            ("::syslog", LogLocation::Syslog(SyslogMethod::Native)),
            (
                "syslog:nonblocking",
                LogLocation::Syslog(SyslogMethod::Nonblocking),
            ),
            ("syslog:udp", LogLocation::Syslog(SyslogMethod::Udp)),
            (
                "syslog:udp-rfc5424",
                LogLocation::Syslog(SyslogMethod::UdpRfc5424),
            ),
            ("file", LogLocation::Stderr),
            ("file:", LogLocation::Stderr),
            ("file:-", LogLocation::Stderr),
            ("file:/tmp/x.log", LogLocation::File("/tmp/x.log".into())),
            ("file:/tmp/x:y", LogLocation::File("/tmp/x".into())),
            ("file:rel.log", LogLocation::File("rel.log".into())),
        ];
        for (text, want) in ok {
            let loaded = parse(&format!("[logging]\nlocation = {text}\n")).unwrap();
            assert_eq!(loaded.conf.logging.location, want, "{text}");
        }
        for bad in ["syslog:foo", "SYSLOG", "stderr", ":::"] {
            invalid(&format!("[logging]\nlocation = {bad}\n"));
        }
    }

    #[test]
    fn value_equal_to_default_is_skipped() {
        let loaded = parse("[cluster]\nleader timeout = 7\nleader timeout = 5\n").unwrap();
        assert_eq!(loaded.conf.cluster.leader_timeout, 7);
        let loaded = parse("[cluster]\nleader timeout = 7\nleader timeout = 8\n").unwrap();
        assert_eq!(loaded.conf.cluster.leader_timeout, 8);
        let loaded =
            parse("[database]\nvolatile database directory = /var/lib/ctdb/volatile\n").unwrap();
        assert_eq!(
            loaded
                .conf
                .store
                .line_of("database", "volatile database directory"),
            None
        );
        assert!(loaded.conf.check_host(Path::new("/nonexistent")).is_ok());
    }

    #[test]
    fn host_checks() {
        let dir = std::env::temp_dir().join(format!("ctdb-conf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("debug.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();

        let check = |text: &str| parse(text).unwrap().conf.check_host(&dir);
        let d = dir.display();
        assert!(check(&format!("[database]\nstate database directory = {d}\n")).is_ok());
        let e = check("[database]\n\nstate database directory = /nonexistent/x\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("state database directory"), "{e}");
        assert!(check("[logging]\nlocation = file:/nonexistent/x.log\n").is_err());
        assert!(check(&format!("[logging]\nlocation = file:{d}/x.log\n")).is_ok());
        let e = check("[event]\ndebug script = /some/where/debug.sh\n").unwrap_err();
        assert!(e.to_string().contains("not executable"), "{e}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check("[event]\ndebug script = /some/where/debug.sh\n").is_ok());
        assert!(check("[database]\nlock debug script = debug.sh\n").is_ok());
        assert!(check("[database]\nlock debug script = missing.sh\n").is_err());

        std::fs::write(dir.join("ctdb.conf"), "[failover]\ndisabled = yes\n").unwrap();
        let loaded = CtdbConf::load(&dir.join("ctdb.conf")).unwrap();
        assert!(loaded.conf.failover.disabled);
        let missing = CtdbConf::load(&dir.join("absent.conf")).unwrap();
        assert_eq!(missing.conf.store.values, CtdbConf::default().store.values);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn option_table_is_complete() {
        assert_eq!(CONF_OPTIONS.len(), 20);
        for (i, o) in CONF_OPTIONS.iter().enumerate() {
            assert_eq!(option_index(o.section, o.key), Some(i));
            assert!(SECTIONS.contains(&o.section));
            let matches_type = matches!(
                (o.ty, o.default),
                (
                    ConfType::String,
                    ConfDefault::Unset | ConfDefault::String(_)
                ) | (ConfType::Integer, ConfDefault::Integer(_))
                    | (ConfType::Boolean, ConfDefault::Boolean(_))
            );
            assert!(matches_type, "{o:?}");
        }
        assert_eq!(
            find_option("CLUSTER", "leader timeout").map(|o| o.default),
            Some(ConfDefault::Integer(5))
        );
    }

    /// Cross-check against stock `ctdb-config` when it is installed.
    #[test]
    fn agrees_with_stock_ctdb_config() {
        let tool = Path::new("/usr/libexec/ctdb/ctdb-config");
        if !tool.exists() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("ctdb-conf-stock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = [
            "",
            "[cluster]\nleader timeout = 7x\nnode address = fd00::1\n",
            "[Logging]\n  log   level =  warn \nlocation = syslog:udp\n",
            "[legacy]\nstart as stopped = YES\nscript log level = 3\n[cluster]\ncluster lock = /a/b\\\n/c\n",
            "[cluster]\nleader timeout = 7\nleader timeout = 5\n",
            "[failover]\ndisabled = on\n",
            "[cluster]\ntransport = ib\n",
            "[cluster]\nnode address = 10.0.0\n",
            "[logging]\nlog level = DEBUGX\n",
            "[logging]\nlocation = file:/nonexistent/log\n",
            "[database]\nstate database directory = /nonexistent\n",
            "[database]\nstate database directory = /tmp\n",
            "[event]\ndebug script = nothere.sh\n",
            "[cluster]\nunknown = 1\n",
            "[nosuch]\nunknown = 1\n",
            "top = 1\n",
            "[cluster]\nrecovery lock = /x\nleader capability = no\n",
            "[cluster]\nleader timeout\n",
            "[cluster]\nleader timeout = \n",
        ];
        let run = |command: &str| {
            std::process::Command::new(tool)
                .arg(command)
                .env("CTDB_TEST_MODE", "1")
                .env("CTDB_BASE", &dir)
                .output()
                .unwrap()
        };
        for text in files {
            std::fs::write(dir.join("ctdb.conf"), text).unwrap();
            let dump = run("dump");
            let validate = run("validate");
            let ours = CtdbConf::parse_with_log_level_default(text, "ctdb.conf", "ERROR")
                .and_then(|l| l.conf.check_host(&dir).map(|()| l));
            match ours {
                Ok(loaded) => {
                    assert!(dump.status.success(), "stock rejected {text:?}");
                    assert_eq!(
                        loaded.conf.store.dump(),
                        String::from_utf8_lossy(&dump.stdout),
                        "{text:?}"
                    );
                    let strict_ok = !loaded
                        .warnings
                        .iter()
                        .any(ConfWarning::rejected_by_validate);
                    assert_eq!(validate.status.success(), strict_ok, "{text:?}");
                }
                Err(e) => {
                    assert!(!dump.status.success(), "stock accepted {text:?}, we: {e}");
                    assert!(!validate.status.success(), "{text:?}");
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
