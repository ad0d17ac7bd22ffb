//! Event script directories (mirrors `ctdb/common/event_script.c`).
//!
//! A component's scripts are the entries of `etcdir/events/<component>/` named like
//! `[0-9][0-9].*.script`, in byte order; a script is enabled when its owner-execute bit is set.
//! The event state machine reaches the file system only through [`ScriptDir`], so that its unit
//! tests can substitute an in-memory directory; [`FsScriptDir`] is the real one.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::Path;

const SCRIPT_SUFFIX: &str = ".script";

/// `PATH_MAX`, which bounds the names stock builds in fixed buffers.
const PATH_MAX: usize = 4096;

/// The file system operations the event state machine needs. Errors are errno values, which
/// travel unchanged into replies.
pub trait ScriptDir {
    /// Whether `dir` can serve as a component directory (`run_event_init`): `Ok` for a
    /// directory, the `stat` errno, or `ENOTDIR`.
    fn check_component(&self, dir: &Path) -> Result<(), i32>;

    /// The script names in `dir` (without `.script`), sorted (`event_script_get_list`).
    fn list_scripts(&self, dir: &Path) -> Result<Vec<String>, i32>;

    /// Sets or clears the execute bits of one script (`event_script_chmod`).
    fn set_enabled(&self, dir: &Path, script: &str, enable: bool) -> Result<(), i32>;
}

/// Whether a directory entry name has the shape of an event script: two digits, a dot,
/// anything, `.script` (the `fnmatch` pattern `[0-9][0-9].*.script`).
pub fn is_script_name(name: &[u8]) -> bool {
    let suffix = SCRIPT_SUFFIX.as_bytes();
    match name {
        [a, b, b'.', rest @ ..] if a.is_ascii_digit() && b.is_ascii_digit() => {
            // The `*` may be empty, so "NN..script" qualifies but "NN.script" does not.
            rest.len() >= suffix.len() && rest.ends_with(suffix)
        }
        _ => false,
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The directory as it is on disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsScriptDir;

impl ScriptDir for FsScriptDir {
    fn check_component(&self, dir: &Path) -> Result<(), i32> {
        let meta = std::fs::metadata(dir).map_err(|e| errno_of(&e))?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(libc::ENOTDIR)
        }
    }

    fn list_scripts(&self, dir: &Path) -> Result<Vec<String>, i32> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| errno_of(&e))? {
            let entry = entry.map_err(|e| errno_of(&e))?;
            let file_name = entry.file_name();
            let bytes = file_name.as_bytes();
            if is_script_name(bytes) {
                names.push(bytes[..bytes.len() - SCRIPT_SUFFIX.len()].to_vec());
            }
        }
        // `alphasort` in the C locale, which is what eventd runs in.
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect())
    }

    fn set_enabled(&self, dir: &Path, script: &str, enable: bool) -> Result<(), i32> {
        // A name may already carry the suffix, as long as there is something before it.
        let file_name = if script.len() > SCRIPT_SUFFIX.len() && script.ends_with(SCRIPT_SUFFIX) {
            script.to_string()
        } else {
            format!("{script}{SCRIPT_SUFFIX}")
        };
        if file_name.len() >= PATH_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        // Stock looks the name up by reading the directory rather than by path, so that a name
        // with a slash can never match, and remembers the entry's inode to detect symlinks.
        let mut found_inode = None;
        for entry in std::fs::read_dir(dir).map_err(|e| errno_of(&e))? {
            let entry = entry.map_err(|e| errno_of(&e))?;
            if entry.file_name() == OsStr::new(&file_name) {
                if !is_script_name(file_name.as_bytes()) {
                    return Err(libc::EINVAL);
                }
                found_inode = Some(entry.ino());
                break;
            }
        }
        let Some(inode) = found_inode else {
            return Err(libc::ENOENT);
        };
        let path = dir.join(&file_name);
        if path.as_os_str().len() >= PATH_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| errno_of(&e))?;
        let meta = file.metadata().map_err(|e| errno_of(&e))?;
        if meta.ino() != inode {
            // A symlink: enabling links is the tool's business, not eventd's.
            return Err(libc::EINVAL);
        }
        let exec_bits = 0o111;
        let mode = meta.mode() & 0o7777;
        let new_mode = if enable {
            mode | exec_bits
        } else {
            mode & !exec_bits
        };
        file.set_permissions(std::fs::Permissions::from_mode(new_mode))
            .map_err(|e| errno_of(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ctdb-rs-event-script-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn script_name_pattern_matches_fnmatch() {
        for good in ["00.a.script", "99..script", "10.x.y.script", "01.-.script"] {
            assert!(is_script_name(good.as_bytes()), "{good}");
        }
        for bad in [
            "01.script",
            "1.a.script",
            "ab.a.script",
            "01.a.scrip",
            "01a.b.script",
            "01.a.script~",
            "",
        ] {
            assert!(!is_script_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn listing_filters_and_sorts() {
        let dir = temp_dir("list");
        for name in [
            "20.b.script",
            "01.z.script",
            "10.a.script",
            "README",
            "5.x.script",
            "10.a.options",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let fs = FsScriptDir;
        assert_eq!(fs.list_scripts(&dir).unwrap(), vec!["01.z", "10.a", "20.b"]);
        assert_eq!(fs.check_component(&dir), Ok(()));
        assert_eq!(fs.check_component(&dir.join("nosuch")), Err(libc::ENOENT));
        assert_eq!(fs.check_component(&dir.join("README")), Err(libc::ENOTDIR));
        assert_eq!(fs.list_scripts(&dir.join("nosuch")), Err(libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chmod_toggles_all_execute_bits_and_reports_errors() {
        let dir = temp_dir("chmod");
        let script = dir.join("10.a.script");
        std::fs::write(&script, b"").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o640)).unwrap();
        let fs = FsScriptDir;
        assert_eq!(fs.set_enabled(&dir, "10.a", true), Ok(()));
        assert_eq!(mode(&script), 0o751);
        assert_eq!(fs.set_enabled(&dir, "10.a.script", false), Ok(()));
        assert_eq!(mode(&script), 0o640);
        assert_eq!(fs.set_enabled(&dir, "99.none", true), Err(libc::ENOENT));
        std::fs::write(dir.join("bad.script"), b"").unwrap();
        assert_eq!(fs.set_enabled(&dir, "bad", true), Err(libc::EINVAL));
        std::os::unix::fs::symlink(&script, dir.join("20.link.script")).unwrap();
        assert_eq!(fs.set_enabled(&dir, "20.link", true), Err(libc::EINVAL));
        assert_eq!(mode(&script), 0o640);
        assert_eq!(fs.set_enabled(&dir, "../10.a", true), Err(libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
