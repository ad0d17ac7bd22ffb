//! `ctdb-ipalloc ipalloc <node-flags,...> [multi]`: CTDB's IP allocation test driver (the
//! `ctdb_takeover_tests ipalloc` program of stock's unit tests), over our allocation code.
//! Known public IPs come on standard input, settings in the environment; see
//! `ctdb::server::ipalloc::driver` for the formats.
//!
//! Set `CTDB_IPALLOC_TIMING` to get the time taken (parsing plus allocation, in microseconds)
//! as an extra last line on standard error; with `CTDB_IPALLOC_TIMING=N` the work is done N
//! times and the fastest run is reported (for benchmarks on a busy machine).

use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::ExitCode;

use ctdb::common::clock::MonotonicClock;
use ctdb::server::ipalloc::driver::{run, Env, Exit};

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv
        .next()
        .as_deref()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map_or_else(
            || "ctdb-ipalloc".to_owned(),
            |p| String::from_utf8_lossy(p.as_bytes()).into_owned(),
        );
    let args: Vec<Vec<u8>> = argv.map(OsStringExt::into_vec).collect();
    let env = Env::from_lookup(|name| std::env::var_os(name).map(OsStringExt::into_vec));
    let timing = std::env::var_os("CTDB_IPALLOC_TIMING");
    let repeat = timing
        .as_ref()
        .and_then(|t| t.to_str()?.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);

    let mut stdin = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("{program}: reading standard input: {err}");
        return ExitCode::from(1);
    }

    let clock = MonotonicClock::new();
    let mut fastest = std::time::Duration::MAX;
    let mut output = None;
    for _ in 0..repeat {
        let start = clock.now();
        output = Some(run(&program, &args, &env, &stdin));
        fastest = fastest.min(clock.now().saturating_since(start));
    }
    let Some(output) = output else {
        return ExitCode::from(1);
    };

    // Stock's standard error is unbuffered and its standard output is flushed at exit, so the
    // log lines always come first.
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(&output.stderr);
    if timing.is_some() {
        let _ = writeln!(stderr, "ipalloc time: {} us", fastest.as_micros());
    }
    let _ = stderr.flush();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&output.stdout);
    let _ = stdout.flush();
    match output.exit {
        Exit::Code(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Exit::Abort => std::process::abort(),
    }
}
