//! What ctdb-eventd reads from `ctdb.conf` (mirrors `ctdb/event/event_config.c` and
//! `event_conf.c`).
//!
//! The file is read with the shared `ctdb.conf` reader; eventd keeps the keys it uses —
//! `[logging] location`, `[logging] log level` and `[event] debug script`.

use crate::common::conf::CtdbConf;
use crate::common::logging::{debug_level_parse, LogLocation};
use crate::common::path::CtdbPaths;
use std::path::{Path, PathBuf};

/// `LOGGING_LOG_LEVEL_DEFAULT`: eventd passes no default of its own.
pub const DEFAULT_LOG_LEVEL: &str = "ERROR";

/// A configuration problem that stops eventd from starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The settings eventd reads from `ctdb.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventConfig {
    pub log_location: String,
    pub log_level: String,
    /// `[event] debug script` as written (a name relative to the etc dir).
    pub debug_script: Option<String>,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            log_location: CtdbPaths::default_log_location(),
            log_level: DEFAULT_LOG_LEVEL.into(),
            debug_script: None,
        }
    }
}

impl EventConfig {
    /// Parses `ctdb.conf` text with the shared reader ([`CtdbConf`]), keeping the keys eventd
    /// uses. A syntax error or an invalid value stops eventd, naming the file and line.
    pub fn parse(text: &str, file_name: &str) -> Result<EventConfig, ConfigError> {
        let loaded = CtdbConf::parse_with_log_level_default(text, file_name, DEFAULT_LOG_LEVEL)
            .map_err(|e| ConfigError(e.to_string()))?;
        let raw = |section: &str, key: &str| {
            loaded
                .conf
                .store
                .get(section, key)
                .and_then(|(v, _)| v.as_str().map(str::to_string))
        };
        let defaults = EventConfig::default();
        Ok(EventConfig {
            log_location: raw("logging", "location").unwrap_or(defaults.log_location),
            log_level: raw("logging", "log level").unwrap_or(defaults.log_level),
            debug_script: loaded.conf.event.debug_script.clone(),
        })
    }

    /// Reads the configuration file; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<EventConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EventConfig::default()),
            Err(e) => Err(ConfigError(format!(
                "Failed to read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Stock's checks at load time: the log location and level must parse, and the debug script
    /// (`event_conf_validate_debug_script`) — the file named by the value's last component —
    /// must be an executable regular file in the etc dir.
    pub fn validate(&self, etc_dir: &Path) -> Result<(), ConfigError> {
        LogLocation::parse(&self.log_location)
            .map_err(|e| ConfigError(format!("Invalid logging location: {e}")))?;
        if debug_level_parse(&self.log_level).is_none() {
            return Err(ConfigError(format!(
                "Invalid logging level {}",
                self.log_level
            )));
        }
        let Some(script) = &self.debug_script else {
            return Ok(());
        };
        if script.is_empty() {
            return Err(ConfigError("debug script is empty".into()));
        }
        let base = Path::new(script)
            .file_name()
            .map_or_else(|| PathBuf::from(script), PathBuf::from);
        let path = etc_dir.join(base);
        let meta = std::fs::metadata(&path)
            .map_err(|_| ConfigError(format!("debug script {} does not exist", path.display())))?;
        if !meta.is_file() {
            return Err(ConfigError(format!(
                "debug script {} is not a file",
                path.display()
            )));
        }
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o100 == 0 {
            return Err(ConfigError(format!(
                "debug script {} is not executable",
                path.display()
            )));
        }
        Ok(())
    }

    /// The debug script's path as eventd runs it: the value appended to the etc dir.
    pub fn debug_script_path(&self, paths: &CtdbPaths) -> Option<PathBuf> {
        self.debug_script.as_ref().map(|s| paths.etcdir_append(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_what_eventd_uses() {
        let config = EventConfig::parse(
            "# comment\n[LOGGING]\n  location = file:/tmp/log\n\tlog   level=DEBUG\n\
             [cluster]\n  node address = 127.0.0.1\n[event]\n; no\n  debug script = debug.sh \n",
            "ctdb.conf",
        )
        .unwrap();
        assert_eq!(
            config,
            EventConfig {
                log_location: "file:/tmp/log".into(),
                log_level: "DEBUG".into(),
                debug_script: Some("debug.sh".into()),
            }
        );
        assert_eq!(
            EventConfig::parse("", "ctdb.conf").unwrap(),
            EventConfig::default()
        );
        assert!(EventConfig::parse("[logging]\nlog level = LOUD\n", "ctdb.conf").is_err());
        let paths = CtdbPaths::from_env(
            &crate::common::path::Environment::new()
                .with("CTDB_TEST_MODE", "yes")
                .with("CTDB_BASE", "/tmp/n0"),
        )
        .unwrap();
        assert_eq!(
            config.debug_script_path(&paths),
            Some(PathBuf::from("/tmp/n0/debug.sh"))
        );
    }

    #[test]
    fn debug_script_must_be_executable_file() {
        let dir = std::env::temp_dir().join(format!("ctdb-rs-event-conf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let with = |name: &str| EventConfig {
            debug_script: Some(name.into()),
            ..EventConfig::default()
        };
        assert!(with("debug.sh").validate(&dir).is_err());
        std::fs::write(dir.join("debug.sh"), b"#!/bin/sh\n").unwrap();
        assert!(with("debug.sh").validate(&dir).is_err());
        std::fs::set_permissions(
            dir.join("debug.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert!(with("debug.sh").validate(&dir).is_ok());
        assert!(with("sub/debug.sh").validate(&dir).is_ok(), "basename only");
        std::fs::create_dir(dir.join("d.sh")).unwrap();
        assert!(with("d.sh").validate(&dir).is_err());
        assert!(EventConfig::default().validate(&dir).is_ok());
        let bad_level = EventConfig {
            log_level: "LOUD".into(),
            ..EventConfig::default()
        };
        assert!(bad_level.validate(&dir).is_err());
        let bad_location = EventConfig {
            log_location: "carrier-pigeon".into(),
            ..EventConfig::default()
        };
        assert!(bad_location.validate(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
