//! ctdb-bench: client-side load for benchmarking a CTDB daemon, stock or ours.
//!
//! Every subcommand prints its results as `key=value` lines on stdout (see
//! `ctdb::tools::bench::output`); `bench/run.sh` runs it against both daemons and feeds the
//! collected lines to `ctdb-bench report`.

use ctdb::protocol::header::CURRENT_NODE;
use ctdb::protocol::opcode::ControlOpcode;
use ctdb::tools::bench::concurrent::{self, ConcurrentOptions};
use ctdb::tools::bench::output::KeyValues;
use ctdb::tools::bench::procfs::{self, FootprintOptions};
use ctdb::tools::bench::report::Report;
use ctdb::tools::bench::ring::{self, RingOptions, DEFAULT_SRVID};
use ctdb::tools::bench::rtt::{self, RttOptions};
use ctdb::tools::bench::timing::{self, FailoverOptions, RecoverOptions};
use ctdb::tools::bench::volatile::{self, Layout};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: ctdb-bench <command> [options]

commands:
  rtt           control round trips on one connection
                  [--node local|PNN] [--count K] [--warmup W] [--opcode ping|get-pnn]
  concurrent    C clients, one control in flight each
                  [--clients C] [--count K per client] [--node local|PNN]
                  [--opcode ping|get-pnn] [--timeout SECS]
  message-ring  two tokens passed round a ring of clients, one client per node
                  [--nodes N] [--seconds S] [--srvid X] (with --cluster, or --sockets A,B,C)
  fetch-lock-ring  one hot key fetch-locked round the nodes in turn (migrations/s)
                  [--nodes N] [--seconds S] [--db NAME] [--key K] (with --cluster, or --sockets)
  fetch-lock    W worker processes per node fetch-lock and increment one key K times each
                  [--nodes N] [--per-node W] [--count K] [--seconds S] [--db NAME] [--key K]
                  [--timeout S]
                  (with --cluster, or --sockets)
  fetch-lock-worker  one such worker: --socket PATH [--db NAME] [--key K] [--count K]
                  [--seconds S] [--wait-for-go]
  footprint     CPU and RSS of process trees over a window
                  --pid P [--pid P ...] [--seconds S] [--interval-ms MS]
  fill-volatile write one node's share of a synthetic volatile database into its TDB file
                  --db PATH --pnn N [--nodes N] [--records R] [--stale-every K]
                  [--value-len B] [--no-wipe]
  census        count the records of a volatile TDB file (records, stale, empty)
                  --db PATH
  recover       what `ctdb recover` does, timed at --poll-ms resolution
                  [--quiet SECS] [--timeout SECS] [--poll-ms MS]
  failover      SIGKILL (or SIGSTOP) a non-leader node hosting public addresses, time until
                  they moved
                  --cluster DIR [--nodes N] [--signal KILL|STOP] [--quiet SECS]
                  [--timeout SECS] [--poll-ms MS]
  report        turn raw harness results into a table, CSV and JSON
                  --raw FILE [--csv FILE] [--json FILE] [--table FILE]
                  [--meta KEY=VALUE ...] [--headline BENCH=METRIC,METRIC ...]

socket selection (rtt, concurrent, recover):
  --socket PATH            a daemon's unix socket (default: $CTDB_SOCKET)
  --cluster DIR --from N   node N of a scripts/local_cluster.sh cluster (DIR/node.N/...)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "rtt" => cmd_rtt(rest),
        "concurrent" => cmd_concurrent(rest),
        "message-ring" => cmd_message_ring(rest),
        "fetch-lock-ring" => fetch_lock_cmd::ring(rest),
        "fetch-lock" => fetch_lock_cmd::contend(rest),
        "fetch-lock-worker" => fetch_lock_cmd::worker(rest),
        "footprint" => cmd_footprint(rest),
        "fill-volatile" => cmd_fill_volatile(rest),
        "census" => cmd_census(rest),
        "recover" => cmd_recover(rest),
        "failover" => cmd_failover(rest),
        "report" => cmd_report(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown command '{other}'\n{USAGE}")),
    };
    match result {
        Ok(kv) => {
            print!("{}", kv.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctdb-bench {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(options: &getopts::Options, args: &[String]) -> Result<getopts::Matches, String> {
    let m = options.parse(args).map_err(|e| e.to_string())?;
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument '{extra}'"));
    }
    Ok(m)
}

fn number<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: T) -> Result<T, String> {
    match m.opt_str(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("--{name}: '{v}' is not a valid number")),
    }
}

fn socket_options(o: &mut getopts::Options) {
    o.optopt("", "socket", "daemon socket", "PATH");
    o.optopt("", "cluster", "local_cluster.sh directory", "DIR");
    o.optopt("", "from", "node of the cluster to connect to", "N");
}

fn cluster_socket(dir: &str, pnn: usize) -> PathBuf {
    PathBuf::from(dir)
        .join(format!("node.{pnn}"))
        .join("run/ctdbd.socket")
}

fn socket_of(m: &getopts::Matches) -> Result<PathBuf, String> {
    if let Some(path) = m.opt_str("socket") {
        return Ok(PathBuf::from(path));
    }
    if let Some(dir) = m.opt_str("cluster") {
        return Ok(cluster_socket(&dir, number(m, "from", 0usize)?));
    }
    std::env::var_os("CTDB_SOCKET")
        .map(PathBuf::from)
        .ok_or_else(|| "no socket: give --socket, --cluster or set CTDB_SOCKET".to_string())
}

fn destnode_of(m: &getopts::Matches) -> Result<u32, String> {
    match m.opt_str("node").as_deref() {
        None | Some("local") => Ok(CURRENT_NODE),
        Some(n) => n
            .parse()
            .map_err(|_| format!("--node: '{n}' is neither 'local' nor a PNN")),
    }
}

fn opcode_of(m: &getopts::Matches) -> Result<ControlOpcode, String> {
    match m.opt_str("opcode").as_deref() {
        None | Some("ping") => Ok(ControlOpcode::Ping),
        Some("get-pnn") => Ok(ControlOpcode::GetPnn),
        Some(other) => Err(format!("--opcode: '{other}' (want ping or get-pnn)")),
    }
}

fn cmd_rtt(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    socket_options(&mut o);
    o.optopt("", "node", "destination", "local|PNN");
    o.optopt("", "count", "round trips", "K");
    o.optopt("", "warmup", "unmeasured round trips first", "W");
    o.optopt("", "opcode", "control", "ping|get-pnn");
    let m = parse(&o, args)?;
    let options = RttOptions {
        destnode: destnode_of(&m)?,
        opcode: opcode_of(&m)?,
        count: number(&m, "count", 10_000)?,
        warmup: number(&m, "warmup", 100)?,
    };
    let socket = socket_of(&m)?;
    rtt::run(&socket, &options).map_err(|e| format!("{}: {e}", socket.display()))
}

fn cmd_concurrent(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    socket_options(&mut o);
    o.optopt("", "clients", "connections", "C");
    o.optopt("", "count", "round trips per client", "K");
    o.optopt("", "node", "destination", "local|PNN");
    o.optopt("", "opcode", "control", "ping|get-pnn");
    o.optopt("", "timeout", "give up after", "SECS");
    let m = parse(&o, args)?;
    let options = ConcurrentOptions {
        clients: number(&m, "clients", 16)?,
        count: number(&m, "count", 1000)?,
        destnode: destnode_of(&m)?,
        opcode: opcode_of(&m)?,
        timeout: Duration::from_secs_f64(number(&m, "timeout", 120.0f64)?.max(0.0)),
    };
    let socket = socket_of(&m)?;
    concurrent::run(&socket, &options).map_err(|e| format!("{}: {e}", socket.display()))
}

fn cmd_message_ring(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    o.optopt("", "cluster", "local_cluster.sh directory", "DIR");
    o.optopt("", "nodes", "nodes in the ring", "N");
    o.optopt(
        "",
        "sockets",
        "comma-separated sockets, one per node",
        "A,B,C",
    );
    o.optopt("", "seconds", "how long the ring runs", "S");
    o.optopt("", "srvid", "srvid the clients register", "X");
    let m = parse(&o, args)?;
    let sockets: Vec<PathBuf> = match (m.opt_str("sockets"), m.opt_str("cluster")) {
        (Some(list), _) => list.split(',').map(PathBuf::from).collect(),
        (None, Some(dir)) => (0..number(&m, "nodes", 3usize)?)
            .map(|pnn| cluster_socket(&dir, pnn))
            .collect(),
        (None, None) => return Err("give --cluster DIR or --sockets A,B,C".into()),
    };
    let srvid = match m.opt_str("srvid") {
        None => DEFAULT_SRVID,
        Some(s) => parse_u64(&s).ok_or_else(|| format!("--srvid: '{s}' is not a number"))?,
    };
    let options = RingOptions {
        sockets,
        seconds: number(&m, "seconds", 10.0)?,
        srvid,
        setup_timeout: Duration::from_secs(10),
    };
    ring::run(&options).map_err(|e| e.to_string())
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn cmd_footprint(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    o.optmulti("", "pid", "root of a process tree", "PID");
    o.optopt("", "seconds", "window", "S");
    o.optopt("", "interval-ms", "RSS sampling interval", "MS");
    let m = parse(&o, args)?;
    let roots = m
        .opt_strs("pid")
        .iter()
        .map(|p| p.trim().parse::<i32>().map_err(|_| format!("--pid: '{p}'")))
        .collect::<Result<Vec<i32>, String>>()?;
    if roots.is_empty() {
        return Err("give at least one --pid".into());
    }
    let options = FootprintOptions {
        roots,
        window: Duration::from_secs_f64(number(&m, "seconds", 60.0f64)?.max(0.0)),
        interval: Duration::from_millis(number(&m, "interval-ms", 1000u64)?.max(10)),
    };
    procfs::watch(&options)
}

fn cmd_fill_volatile(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    o.optopt("", "db", "the node's TDB file", "PATH");
    o.optopt("", "pnn", "the node", "N");
    o.optopt("", "nodes", "nodes in the cluster", "N");
    o.optopt("", "records", "distinct keys in the whole database", "R");
    o.optopt(
        "",
        "stale-every",
        "every K-th key has stale copies (0: none)",
        "K",
    );
    o.optopt("", "value-len", "payload bytes after the header", "B");
    o.optflag("", "no-wipe", "keep what the file holds");
    let m = parse(&o, args)?;
    let db = PathBuf::from(m.opt_str("db").ok_or("give --db PATH")?);
    let layout = Layout {
        records: number(&m, "records", 100_000u64)?,
        nodes: number(&m, "nodes", 3u32)?.max(1),
        stale_every: number(&m, "stale-every", 4u64)?,
        value_len: number(&m, "value-len", 64usize)?.max(1),
    };
    let pnn = number(&m, "pnn", u32::MAX)?;
    if pnn >= layout.nodes {
        return Err("give --pnn below --nodes".into());
    }
    volatile::fill(&db, pnn, &layout, !m.opt_present("no-wipe"))
        .map_err(|e| format!("{}: {e}", db.display()))
}

fn cmd_census(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    o.optopt("", "db", "a TDB file", "PATH");
    let m = parse(&o, args)?;
    let db = PathBuf::from(m.opt_str("db").ok_or("give --db PATH")?);
    let census = volatile::census(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    let mut kv = KeyValues::new();
    kv.count("records", census.records)
        .count("stale", census.stale)
        .count("empty", census.empty);
    Ok(kv)
}

fn poll_timing(m: &getopts::Matches) -> Result<(Duration, Duration), String> {
    Ok((
        Duration::from_secs_f64(number(m, "timeout", 300.0f64)?.max(0.0)),
        Duration::from_millis(number(m, "poll-ms", 5u64)?.max(1)),
    ))
}

const QUIET_HELP: &str =
    "first wait until the last recovery ended this long ago (RerecoveryTimeout)";

fn cmd_recover(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    socket_options(&mut o);
    o.optopt("", "timeout", "give up after", "SECS");
    o.optopt("", "poll-ms", "polling interval", "MS");
    o.optopt("", "quiet", QUIET_HELP, "SECS");
    let m = parse(&o, args)?;
    let (timeout, poll) = poll_timing(&m)?;
    let options = RecoverOptions {
        socket: socket_of(&m)?,
        quiet: Duration::from_secs_f64(number(&m, "quiet", 0.0f64)?.max(0.0)),
        timeout,
        poll,
    };
    timing::recover(&options).map_err(|e| format!("{}: {e}", options.socket.display()))
}

fn cmd_failover(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    o.optopt("", "cluster", "local_cluster.sh directory", "DIR");
    o.optopt("", "nodes", "nodes in the cluster", "N");
    o.optopt("", "timeout", "give up after", "SECS");
    o.optopt("", "poll-ms", "polling interval", "MS");
    o.optopt("", "quiet", QUIET_HELP, "SECS");
    o.optopt("", "signal", "KILL (default) or STOP (a hung node)", "SIG");
    let m = parse(&o, args)?;
    let signal = match m.opt_str("signal").as_deref() {
        None | Some("KILL") => libc::SIGKILL,
        Some("STOP") => libc::SIGSTOP,
        Some(other) => return Err(format!("--signal: '{other}' (want KILL or STOP)")),
    };
    let dir = m.opt_str("cluster").ok_or("give --cluster DIR")?;
    let nodes = number(&m, "nodes", 3usize)?;
    let mut pids = Vec::with_capacity(nodes);
    for pnn in 0..nodes {
        let file = PathBuf::from(&dir).join(format!("node.{pnn}/daemon.pid"));
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        pids.push(
            text.trim()
                .parse::<i32>()
                .map_err(|_| format!("{}: not a pid", file.display()))?,
        );
    }
    let (timeout, poll) = poll_timing(&m)?;
    let options = FailoverOptions {
        sockets: (0..nodes).map(|pnn| cluster_socket(&dir, pnn)).collect(),
        pids,
        quiet: Duration::from_secs_f64(number(&m, "quiet", 0.0f64)?.max(0.0)),
        timeout,
        poll,
        signal,
    };
    timing::failover(&options).map_err(|e| e.to_string())
}

fn cmd_report(args: &[String]) -> Result<KeyValues, String> {
    let mut o = getopts::Options::new();
    o.optopt("", "raw", "raw results", "FILE");
    o.optopt("", "csv", "write CSV here", "FILE");
    o.optopt("", "json", "write JSON here", "FILE");
    o.optopt("", "table", "write the table here too", "FILE");
    o.optmulti("", "meta", "run description", "KEY=VALUE");
    o.optmulti("", "headline", "metrics the table shows", "BENCH=M1,M2");
    let m = parse(&o, args)?;
    let raw_path = m.opt_str("raw").ok_or("give --raw FILE")?;
    let raw = std::fs::read_to_string(&raw_path).map_err(|e| format!("{raw_path}: {e}"))?;
    let mut report = Report::from_raw(&raw);
    for pair in m.opt_strs("meta") {
        let (k, v) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
        report.meta.push((k.to_string(), v.to_string()));
    }
    for pair in m.opt_strs("headline") {
        if let Some((bench, metrics)) = pair.split_once('=') {
            let list = metrics
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            report.headline.push((bench.to_string(), list));
        }
    }
    let write = |opt: &str, text: String| -> Result<(), String> {
        match m.opt_str(opt) {
            Some(path) => std::fs::write(&path, text).map_err(|e| format!("{path}: {e}")),
            None => Ok(()),
        }
    };
    let table = report.table();
    write("csv", report.csv())?;
    write("json", report.json())?;
    write("table", table.clone())?;
    print!("{table}");
    if report.skipped_lines > 0 {
        eprintln!(
            "ctdb-bench report: skipped {} malformed line(s)",
            report.skipped_lines
        );
    }
    // The table is the output; no key=value lines.
    Ok(KeyValues::new())
}

mod fetch_lock_cmd {
    use super::{cluster_socket, number, parse};
    use ctdb::tools::bench::fetch_lock::{self, DEFAULT_DB, DEFAULT_KEY};
    use ctdb::tools::bench::output::KeyValues;
    use std::path::PathBuf;
    use std::time::Duration;

    fn common(o: &mut getopts::Options) {
        o.optopt("", "db", "volatile database", "NAME");
        o.optopt("", "key", "the hot key", "K");
        o.optopt("", "timeout", "per fetch-lock", "SECS");
    }

    fn cluster_options(o: &mut getopts::Options) {
        o.optopt("", "cluster", "local_cluster.sh directory", "DIR");
        o.optopt("", "nodes", "nodes taking part", "N");
        o.optopt(
            "",
            "sockets",
            "comma-separated sockets, one per node",
            "A,B,C",
        );
    }

    fn sockets(m: &getopts::Matches) -> Result<Vec<PathBuf>, String> {
        match (m.opt_str("sockets"), m.opt_str("cluster")) {
            (Some(list), _) => Ok(list.split(',').map(PathBuf::from).collect()),
            (None, Some(dir)) => Ok((0..number(m, "nodes", 3usize)?)
                .map(|pnn| cluster_socket(&dir, pnn))
                .collect()),
            (None, None) => Err("give --cluster DIR or --sockets A,B,C".into()),
        }
    }

    fn db_key_timeout(m: &getopts::Matches) -> Result<(String, Vec<u8>, Duration), String> {
        Ok((
            m.opt_str("db").unwrap_or_else(|| DEFAULT_DB.to_string()),
            m.opt_str("key")
                .unwrap_or_else(|| DEFAULT_KEY.to_string())
                .into_bytes(),
            Duration::from_secs_f64(number(m, "timeout", 30.0f64)?.max(0.0)),
        ))
    }

    pub fn ring(args: &[String]) -> Result<KeyValues, String> {
        let mut o = getopts::Options::new();
        cluster_options(&mut o);
        common(&mut o);
        o.optopt("", "seconds", "how long the ring runs", "S");
        let m = parse(&o, args)?;
        let (db, key, timeout) = db_key_timeout(&m)?;
        fetch_lock::ring(&fetch_lock::RingOptions {
            sockets: sockets(&m)?,
            db,
            key,
            seconds: number(&m, "seconds", 10.0)?,
            timeout,
        })
    }

    pub fn contend(args: &[String]) -> Result<KeyValues, String> {
        let mut o = getopts::Options::new();
        cluster_options(&mut o);
        common(&mut o);
        o.optopt("", "per-node", "worker processes per node", "W");
        o.optopt("", "count", "increments per worker (0: no limit)", "K");
        o.optopt(
            "",
            "seconds",
            "how long each worker runs (0: until --count)",
            "S",
        );
        let m = parse(&o, args)?;
        let (db, key, timeout) = db_key_timeout(&m)?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        fetch_lock::contend(&fetch_lock::ContendOptions {
            sockets: sockets(&m)?,
            db,
            key,
            per_node: number(&m, "per-node", 4usize)?,
            count: number(&m, "count", 200usize)?,
            seconds: number(&m, "seconds", 0.0)?,
            timeout,
            exe,
        })
    }

    pub fn worker(args: &[String]) -> Result<KeyValues, String> {
        let mut o = getopts::Options::new();
        common(&mut o);
        o.optopt("", "socket", "daemon socket", "PATH");
        o.optopt("", "count", "increments (0: no limit)", "K");
        o.optopt("", "seconds", "stop after (0: until --count)", "S");
        o.optflag(
            "",
            "wait-for-go",
            "print ready, then wait for a byte on stdin",
        );
        let m = parse(&o, args)?;
        let (db, key, timeout) = db_key_timeout(&m)?;
        fetch_lock::worker(&fetch_lock::WorkerOptions {
            socket: PathBuf::from(m.opt_str("socket").ok_or("give --socket PATH")?),
            db,
            key,
            count: number(&m, "count", 200usize)?,
            seconds: number(&m, "seconds", 0.0)?,
            timeout,
            wait_for_go: m.opt_present("wait-for-go"),
        })
    }
}
