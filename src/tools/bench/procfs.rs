//! CPU time and memory of daemon process trees, read from `/proc` (benchmark B19).
//!
//! A daemon's footprint includes its children: ctdbd forks the recovery daemon and starts
//! ctdb-eventd, lock helpers and event scripts. CPU is counted over the tree as each live
//! process's run time plus the `cutime + cstime` of children it has reaped, so a child that
//! exits during the window still counts: the kernel moves its time into the parent's
//! `cutime`/`cstime` when the parent reaps it. Live run time comes from `schedstat` in
//! nanoseconds where the kernel has it: an idle daemon uses less than one 10 ms clock tick
//! per second, which tick-based `utime`/`stime` cannot resolve.

use super::output::KeyValues;
use crate::common::clock::MonotonicClock;
use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

/// The fields of `/proc/<pid>/stat` the footprint needs. Times are in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

impl ProcStat {
    pub fn total_ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    // After ")": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17), numbered
    // as in proc(5); `rest[0]` is field 3.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(ProcStat {
        pid,
        ppid: field(4)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        cutime: field(16)?.parse::<i64>().ok()?.max(0).unsigned_abs(),
        cstime: field(17)?.parse::<i64>().ok()?.max(0).unsigned_abs(),
    })
}

/// The run time in nanoseconds: the first field of `/proc/<pid>/task/<tid>/schedstat`.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `VmRSS` from `/proc/<pid>/status`, in KiB (absent for kernel threads and zombies).
pub fn parse_vmrss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn rollup_field_kb(smaps_rollup: &str, field: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `Pss` from `/proc/<pid>/smaps_rollup`, in KiB: resident memory with each shared page divided
/// among the processes mapping it. Fair within a tree, but it shrinks when unrelated processes
/// (another cluster's daemons) map the same libraries.
pub fn parse_pss_kb(smaps_rollup: &str) -> Option<u64> {
    rollup_field_kb(smaps_rollup, "Pss")
}

/// Private (unshared) resident memory from `smaps_rollup`, in KiB: `Private_Clean +
/// Private_Dirty`. Independent of other processes; pages a forked child still shares with
/// its parent are in neither's private total.
pub fn parse_uss_kb(smaps_rollup: &str) -> Option<u64> {
    Some(
        rollup_field_kb(smaps_rollup, "Private_Clean")?
            + rollup_field_kb(smaps_rollup, "Private_Dirty")?,
    )
}

/// Every process whose ancestry reaches one of `roots`, roots included (only live ones).
pub fn tree_of(all: &[ProcStat], roots: &[i32]) -> BTreeSet<i32> {
    let mut members: BTreeSet<i32> = all
        .iter()
        .filter(|p| roots.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    // Grows level by level; a process tree is shallow, so a few passes settle it.
    loop {
        let before = members.len();
        for p in all {
            if members.contains(&p.ppid) {
                members.insert(p.pid);
            }
        }
        if members.len() == before {
            return members;
        }
    }
}

fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

/// One look at the trees under `roots`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSample {
    /// CPU time used so far by the tree, reaped children included.
    pub cpu_ns: u64,
    pub rss_kb: u64,
    pub pss_kb: u64,
    pub uss_kb: u64,
    pub processes: usize,
    /// Roots that are still alive.
    pub live_roots: usize,
}

/// Run time of every thread of `pid` from schedstat; `None` when the kernel lacks it.
fn live_cpu_ns(pid: i32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    let mut any = false;
    for task in tasks.filter_map(Result::ok) {
        if let Some(ns) = fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|t| parse_schedstat_ns(&t))
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

pub fn sample(roots: &[i32]) -> TreeSample {
    let ns_per_tick = 1_000_000_000 / clock_ticks_per_second().max(1);
    let all = all_processes();
    let members = tree_of(&all, roots);
    let mut s = TreeSample {
        processes: members.len(),
        ..TreeSample::default()
    };
    for p in all.iter().filter(|p| members.contains(&p.pid)) {
        let live = live_cpu_ns(p.pid).unwrap_or((p.utime + p.stime) * ns_per_tick);
        s.cpu_ns += live + (p.cutime + p.cstime) * ns_per_tick;
        if roots.contains(&p.pid) {
            s.live_roots += 1;
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{}/status", p.pid)) {
            s.rss_kb += parse_vmrss_kb(&status).unwrap_or(0);
        }
        if let Ok(rollup) = fs::read_to_string(format!("/proc/{}/smaps_rollup", p.pid)) {
            s.pss_kb += parse_pss_kb(&rollup).unwrap_or(0);
            s.uss_kb += parse_uss_kb(&rollup).unwrap_or(0);
        }
    }
    s
}

fn clock_ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n.unsigned_abs(),
        _ => 100,
    }
}

#[derive(Debug, Clone)]
pub struct FootprintOptions {
    pub roots: Vec<i32>,
    pub window: Duration,
    pub interval: Duration,
}

/// Watches the trees for the window: CPU use over the window as a percentage of one core,
/// resident memory sampled every interval (RSS mean and maximum, PSS and USS means; summed
/// over all trees).
pub fn watch(options: &FootprintOptions) -> Result<KeyValues, String> {
    let clock = MonotonicClock::new();
    let first = sample(&options.roots);
    if first.live_roots < options.roots.len() {
        return Err(format!(
            "only {} of {} processes are alive",
            first.live_roots,
            options.roots.len()
        ));
    }
    let started = clock.now();
    let end = started.saturating_add(options.window);
    let mut rss = vec![first.rss_kb];
    let mut pss = vec![first.pss_kb];
    let mut uss = vec![first.uss_kb];
    let mut max_processes = first.processes;
    let mut last = first;
    loop {
        let now = clock.now();
        if now >= end {
            break;
        }
        std::thread::sleep(end.saturating_since(now).min(options.interval));
        last = sample(&options.roots);
        rss.push(last.rss_kb);
        pss.push(last.pss_kb);
        uss.push(last.uss_kb);
        max_processes = max_processes.max(last.processes);
    }
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    if last.live_roots < options.roots.len() {
        return Err("a watched process died during the window".to_string());
    }
    let cpu_seconds = last.cpu_ns.saturating_sub(first.cpu_ns) as f64 / 1e9;
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let mut kv = KeyValues::new();
    kv.number("window_s", elapsed)
        .count("daemons", options.roots.len() as u64)
        .count("processes", max_processes as u64)
        .number("cpu_ms", cpu_seconds * 1e3);
    if elapsed > 0.0 {
        kv.number("cpu_pct", cpu_seconds / elapsed * 100.0);
    }
    kv.number("rss_mean_kb", mean(&rss))
        .count("rss_max_kb", rss.iter().copied().max().unwrap_or(0))
        .number("pss_mean_kb", mean(&pss))
        .number("uss_mean_kb", mean(&uss));
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "28098 (ctdb_recoverd) S 28094 28093 28093 0 -1 4194624 1203 0 0 0 \
                        17 9 3 4 20 0 1 0 123456 123456789 1390 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_stat_fields() {
        let p = parse_stat(STAT).unwrap();
        assert_eq!(
            p,
            ProcStat {
                pid: 28098,
                ppid: 28094,
                utime: 17,
                stime: 9,
                cutime: 3,
                cstime: 4
            }
        );
        assert_eq!(p.total_ticks(), 33);
    }

    #[test]
    fn command_names_with_spaces_and_parens() {
        let line = STAT.replace("(ctdb_recoverd)", "(evil ) name)");
        let p = parse_stat(&line).unwrap();
        assert_eq!((p.pid, p.ppid, p.utime), (28098, 28094, 17));
    }

    #[test]
    fn malformed_stat_is_rejected() {
        assert!(parse_stat("").is_none());
        assert!(parse_stat("12 (x) S 1").is_none());
        assert!(parse_stat("x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16").is_none());
        for cut in 0..STAT.len() {
            // Never panics on any prefix.
            let _ = parse_stat(&STAT[..cut]);
        }
    }

    #[test]
    fn vmrss_from_status() {
        let status = "Name:\tctdbd\nVmPeak:\t  20000 kB\nVmRSS:\t    9900 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss_kb(status), Some(9900));
        assert_eq!(parse_vmrss_kb("Name:\tkworker\n"), None);
    }

    #[test]
    fn schedstat_run_time() {
        assert_eq!(
            parse_schedstat_ns("76705766 19110135 394\n"),
            Some(76_705_766)
        );
        assert_eq!(parse_schedstat_ns(""), None);
        assert_eq!(parse_schedstat_ns("x 1 2"), None);
    }

    #[test]
    fn pss_from_smaps_rollup() {
        let rollup = "55d0-7ffe ---p 00000000 00:00 0 [rollup]\nRss:  55232 kB\n\
                      Pss:  20117 kB\nPss_Anon: 100 kB\nShared_Clean: 9 kB\n\
                      Private_Clean:  1000 kB\nPrivate_Dirty:  234 kB\n";
        assert_eq!(parse_pss_kb(rollup), Some(20117));
        assert_eq!(parse_uss_kb(rollup), Some(1234));
        assert_eq!(parse_pss_kb(""), None);
        assert_eq!(parse_uss_kb("Private_Clean: 5 kB\n"), None);
    }

    fn proc(pid: i32, ppid: i32) -> ProcStat {
        ProcStat {
            pid,
            ppid,
            utime: 0,
            stime: 0,
            cutime: 0,
            cstime: 0,
        }
    }

    #[test]
    fn trees_include_grandchildren_only_of_roots() {
        let all = [
            proc(1, 0),
            proc(10, 1),
            proc(11, 10),
            proc(12, 11),
            proc(20, 1),
            proc(21, 20),
            proc(30, 12),
        ];
        let members: Vec<i32> = tree_of(&all, &[10]).into_iter().collect();
        assert_eq!(members, vec![10, 11, 12, 30]);
        let two: Vec<i32> = tree_of(&all, &[11, 20]).into_iter().collect();
        assert_eq!(two, vec![11, 12, 20, 21, 30]);
        assert!(tree_of(&all, &[99]).is_empty());
    }

    #[test]
    fn samples_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = sample(&[me]);
        assert_eq!(s.live_roots, 1);
        assert!(s.processes >= 1);
        assert!(s.rss_kb > 0);
        assert!(s.cpu_ns > 0);
    }
}
