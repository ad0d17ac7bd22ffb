//! Build script: links the system libtdb (the library smbd and the stock CTDB tools use, so
//! our TDB files are real TDB files) and compiles the small C shim that turns libtdb's
//! printf-style log callback into a formatted string for `common::tdb`.
//!
//! The shim exists because libtdb's log hook is a C variadic function, which stable Rust can
//! neither define nor forward a `va_list` from. Without a C compiler the build still succeeds;
//! TDBs are then opened without a log hook (libtdb discards its messages) and a warning says so.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// libtdb's log callback: formats with `vsnprintf` into a bounded buffer and hands the text to
/// `ctdb_rs_tdb_log_sink`, defined in `src/common/tdb.rs`, together with the logging private
/// pointer the Rust side registered (it names the database).
const LOG_SHIM_SOURCE: &str = r#"
#include <stdarg.h>
#include <stdio.h>

struct tdb_context;

void *tdb_get_logging_private(struct tdb_context *tdb);
void ctdb_rs_tdb_log_sink(void *log_private, int level, const char *message);

void ctdb_rs_tdb_log(struct tdb_context *tdb, int level, const char *format, ...)
{
	char message[1024];
	va_list ap;

	va_start(ap, format);
	if (vsnprintf(message, sizeof(message), format, ap) < 0) {
		message[0] = '\0';
	}
	va_end(ap);
	ctdb_rs_tdb_log_sink(tdb_get_logging_private(tdb), level, message);
}
"#;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-env-changed=CC");
    println!("cargo::rerun-if-env-changed=AR");
    println!("cargo::rustc-check-cfg=cfg(ctdb_tdb_log_shim)");

    let cflags = link_libtdb();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    match build_log_shim(&out_dir, &cflags) {
        Ok(()) => {
            println!("cargo::rustc-link-search=native={}", out_dir.display());
            println!("cargo::rustc-link-lib=static=ctdb_rs_tdb_log");
            println!("cargo::rustc-cfg=ctdb_tdb_log_shim");
        }
        Err(why) => {
            println!("cargo::warning=libtdb log messages will be discarded: {why}");
        }
    }
}

/// Emits the link directives for libtdb and returns its compile flags (for the shim).
fn link_libtdb() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_owned());
    let Some(libs) = run_pkg_config(&pkg_config, "--libs") else {
        println!("cargo::rustc-link-lib=tdb");
        return Vec::new();
    };
    let mut linked = false;
    for flag in libs.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo::rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo::rustc-link-lib={lib}");
            linked |= lib == "tdb";
        }
    }
    if !linked {
        println!("cargo::rustc-link-lib=tdb");
    }
    run_pkg_config(&pkg_config, "--cflags")
        .map(|flags| flags.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn run_pkg_config(pkg_config: &str, what: &str) -> Option<String> {
    let output = Command::new(pkg_config).args([what, "tdb"]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

fn build_log_shim(out_dir: &Path, cflags: &[String]) -> Result<(), String> {
    let source = out_dir.join("ctdb_rs_tdb_log.c");
    let object = out_dir.join("ctdb_rs_tdb_log.o");
    let archive = out_dir.join("libctdb_rs_tdb_log.a");
    std::fs::write(&source, LOG_SHIM_SOURCE).map_err(|e| format!("writing the shim: {e}"))?;

    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let mut compile = Command::new(&cc);
    compile.args(["-c", "-O2", "-fPIC", "-Wall"]).args(cflags);
    compile.arg("-o").arg(&object).arg(&source);
    run(compile, &cc)?;

    let _ = std::fs::remove_file(&archive);
    let ar = env::var("AR").unwrap_or_else(|_| "ar".to_owned());
    let mut pack = Command::new(&ar);
    pack.arg("crs").arg(&archive).arg(&object);
    run(pack, &ar)
}

fn run(mut command: Command, program: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} failed ({status})"))
    }
}
