//! The event daemon's logic, without I/O (mirrors `ctdb/event/event_context.c`,
//! `event_cmd.c`, `ctdb/common/run_event.c` and the bookkeeping half of `run_proc.c`).
//!
//! Requests and process news go in together with `now`; [`Effect`]s come out (send a reply,
//! spawn a process, signal a process group) and [`EventContext::poll_timeout`] says when to
//! call [`EventContext::handle_timeout`] next. The shell owns every fd and pid.
//!
//! Stock semantics kept here, some of them surprising:
//!
//! * Each component has one queue of RUN requests. A new event cancels a running `monitor`
//!   (which replies `ECANCELED` and has its process group SIGKILLed); a `monitor` asked for
//!   while any other event runs is cancelled at once. STATUS and SCRIPT never queue.
//! * The timeout is one absolute deadline for the whole event, fixed when the request
//!   *arrives*, so time spent queued counts and a timeout of 0 expires immediately.
//! * Every script is "run", even a disabled one: the spawn finds it not executable, which
//!   reads as `-ENOEXEC` and is not a failure. Without `CTDB_EVENT_RUN_ALL` the run stops at the
//!   first failure and the stored result lists only the scripts up to it.
//! * A script that times out is *not* killed. If a debug script is configured (and none is
//!   already running for the component), it runs as `<debug> <pid> <event>` and the hung
//!   script's process group gets SIGTERM when it finishes; otherwise the script keeps running
//!   until it exits or eventd shuts down (which SIGKILLs every process group it still tracks).
//! * Exit codes 64..254 are read as "errno + 64" (run_proc's convention for exec failures), so
//!   exit 65 reports `-EPERM` and exit 64 counts as success.
//! * Output is stdout and stderr merged, kept as a C string: anything after a NUL is lost.
//!
//! One deliberate difference: when a client disconnects, stock frees its requests but leaves a
//! dangling "running" pointer behind (a later `monitor` is then cancelled, or eventd crashes if
//! the abandoned run was a monitor). Here the abandoned run's process group is SIGKILLed as in
//! stock, and the queue simply moves on.

use super::script::ScriptDir;
use crate::common::clock::Instant;
use crate::protocol::event::{
    EventPacket, EventReply, EventReplyPacket, EventRequest, EventRequestPacket, EventScript,
    RunRequest, ScriptAction, ScriptRequest, StatusReply, StatusRequest, EVENT_RUN_ALL,
};
use crate::protocol::Timeval;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroI32;
use std::path::PathBuf;
use std::time::Duration;

/// The most output kept per script. Stock keeps everything; a runaway script should not be able
/// to make eventd (and every STATUS reply) grow without bound.
pub const MAX_SCRIPT_OUTPUT: usize = 1024 * 1024;

/// A connected client, as the shell numbers them. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// A process the state machine asked for. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId(u64);

/// The current time: monotonic for deadlines, wall clock for the timestamps in STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: Timeval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSignal {
    Term,
    Kill,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Queue a reply on a client's connection.
    Reply {
        client: ClientId,
        packet: EventReplyPacket,
    },
    /// Start `path` with `argv` (argv[0] included) in a new process group, stdout and stderr on
    /// one pipe whose bytes go to [`EventContext::proc_output`]. Before doing anything else the
    /// shell reports the outcome with [`EventContext::spawned`]. A path that does not exist or
    /// lacks the owner-execute bit fails with its errno (`EACCES` for the latter).
    Spawn {
        proc_id: ProcId,
        path: PathBuf,
        argv: Vec<String>,
    },
    /// `kill(-pgid, signal)`.
    KillGroup { pgid: i32, signal: KillSignal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnOutcome {
    Started { pid: i32 },
    Failed { errno: i32 },
}

/// How a process ended, from `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcExit {
    Exited(i32),
    Signaled(i32),
}

/// `struct run_proc_result`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ProcResult {
    sig: i32,
    err: i32,
    status: i32,
}

impl ProcResult {
    fn from_exit(exit: ProcExit) -> Self {
        match exit {
            ProcExit::Signaled(sig) => ProcResult {
                sig,
                ..Self::default()
            },
            ProcExit::Exited(code) if (64..255).contains(&code) => ProcResult {
                err: code - 64,
                ..Self::default()
            },
            ProcExit::Exited(status) => ProcResult {
                status,
                ..Self::default()
            },
        }
    }

    fn error(err: i32) -> Self {
        ProcResult {
            err,
            ..Self::default()
        }
    }

    /// A script's result as STATUS reports it (`run_event_script_status`).
    fn summary(self) -> i32 {
        if self.sig > 0 {
            -libc::EINTR
        } else if self.err > 0 {
            if self.err == libc::EACCES {
                -libc::ENOEXEC
            } else {
                -self.err
            }
        } else {
            self.status
        }
    }
}

/// Captured output with stock's C-string behaviour: each chunk is appended after the first NUL
/// of what came before, and the result ends at its first NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Output {
    bytes: Option<Vec<u8>>,
}

impl Output {
    fn append(&mut self, chunk: &[u8]) {
        let buf = self.bytes.get_or_insert_with(Vec::new);
        if let Some(nul) = buf.iter().position(|&b| b == 0) {
            buf.truncate(nul);
        }
        let room = MAX_SCRIPT_OUTPUT.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn finish(self) -> Option<Vec<u8>> {
        self.bytes.map(|mut buf| {
            if let Some(nul) = buf.iter().position(|&b| b == 0) {
                buf.truncate(nul);
            }
            buf
        })
    }
}

/// `struct run_event_script`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScriptResult {
    name: String,
    begin: Timeval,
    end: Timeval,
    summary: i32,
    output: Option<Vec<u8>>,
}

/// `struct run_event_script_list`: the stored outcome of one run of an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ScriptList {
    summary: i32,
    scripts: Vec<ScriptResult>,
}

impl ScriptList {
    fn to_reply(&self) -> StatusReply {
        StatusReply {
            summary: self.summary,
            scripts: self
                .scripts
                .iter()
                .map(|s| EventScript {
                    name: Some(s.name.clone()),
                    begin: s.begin,
                    end: s.end,
                    result: s.summary,
                    output: s.output.clone(),
                })
                .collect(),
        }
    }
}

/// A RUN request waiting in (or taken from) a component's queue.
#[derive(Debug, Clone)]
struct PendingRun {
    client: ClientId,
    reqid: u32,
    event: String,
    args: Option<String>,
    deadline: Instant,
    continue_on_failure: bool,
}

/// The run a component is executing, one script at a time.
#[derive(Debug)]
struct ActiveRun {
    request: PendingRun,
    list: ScriptList,
    index: usize,
    /// The script process being waited for, once spawned.
    current: Option<ProcId>,
    is_monitor: bool,
}

/// `struct event_component` plus its `run_event_context`.
#[derive(Debug)]
struct Component {
    dir: PathBuf,
    queue: VecDeque<PendingRun>,
    running: Option<ActiveRun>,
    results: HashMap<String, ScriptList>,
    debug_running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ProcRole {
    /// The current script of a component's running event.
    Script { component: String },
    /// The debug script examining the hung process group `target`.
    Debug { component: String, target: i32 },
    /// A timed-out script nobody waits for; tracked only so shutdown can kill it.
    Detached,
}

#[derive(Debug)]
struct Proc {
    pid: Option<i32>,
    role: ProcRole,
    output: Output,
}

/// The state of ctdb-eventd: components, their queues and stored results, and the processes
/// started for them.
#[derive(Debug)]
pub struct EventContext<D> {
    dirs: D,
    /// `etcdir/events`.
    script_dir: PathBuf,
    /// `etcdir/<[event] debug script>`, if configured.
    debug_script: Option<PathBuf>,
    components: BTreeMap<String, Component>,
    procs: BTreeMap<ProcId, Proc>,
    next_proc: u64,
    effects: VecDeque<Effect>,
}

fn nonzero(errno: i32) -> NonZeroI32 {
    NonZeroI32::new(errno).unwrap_or(NonZeroI32::MIN)
}

/// Logs captured output one line per log record, blank lines skipped (`debug_log`).
fn log_output(prefix: &str, output: &[u8]) {
    for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        log::error!("{prefix}: {}", String::from_utf8_lossy(line));
    }
}

impl<D: ScriptDir> EventContext<D> {
    pub fn new(dirs: D, script_dir: PathBuf, debug_script: Option<PathBuf>) -> Self {
        EventContext {
            dirs,
            script_dir,
            debug_script,
            components: BTreeMap::new(),
            procs: BTreeMap::new(),
            next_proc: 1,
            effects: VecDeque::new(),
        }
    }

    /// The next thing for the shell to do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called: the deadline of any running event
    /// whose current script has started.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.components
            .values()
            .filter_map(|c| c.running.as_ref())
            .filter(|run| {
                run.current
                    .and_then(|id| self.procs.get(&id))
                    .is_some_and(|p| p.pid.is_some())
            })
            .map(|run| run.request.deadline)
            .min()
    }

    /// The pids of every process still tracked: running scripts, debug scripts and timed-out
    /// scripts that have not exited yet.
    pub fn tracked_processes(&self) -> Vec<i32> {
        self.procs.values().filter_map(|p| p.pid).collect()
    }

    /// One request from a client (`event_cmd_dispatch_send`).
    pub fn handle_request(&mut self, now: Now, client: ClientId, packet: EventRequestPacket) {
        let reqid = packet.reqid;
        match packet.body {
            EventRequest::Run(run) => self.cmd_run(now, client, reqid, run),
            EventRequest::Status(status) => {
                let reply = self.cmd_status(&status);
                self.reply(client, reqid, EventReply::Status(reply));
            }
            EventRequest::Script(script) => {
                let result = self.cmd_script(&script);
                self.reply(client, reqid, EventReply::Script(result));
            }
        }
    }

    /// A client went away: its queued requests are dropped and its running event, if any, is
    /// abandoned and its process group killed.
    pub fn client_disconnected(&mut self, now: Now, client: ClientId) {
        let names: Vec<String> = self.components.keys().cloned().collect();
        for name in names {
            let Some(comp) = self.components.get_mut(&name) else {
                continue;
            };
            comp.queue.retain(|run| run.client != client);
            if comp
                .running
                .as_ref()
                .is_some_and(|run| run.request.client == client)
            {
                if let Some(run) = comp.running.take() {
                    self.kill_current(run.current);
                }
                self.trigger(now, &name);
            }
        }
    }

    /// The outcome of an [`Effect::Spawn`].
    pub fn spawned(&mut self, now: Now, proc_id: ProcId, outcome: SpawnOutcome) {
        match outcome {
            SpawnOutcome::Started { pid } => {
                if let Some(proc) = self.procs.get_mut(&proc_id) {
                    proc.pid = Some(pid);
                }
            }
            SpawnOutcome::Failed { errno } => {
                if let Some(proc) = self.procs.remove(&proc_id) {
                    self.proc_done(now, proc_id, proc, ProcResult::error(errno));
                }
            }
        }
    }

    /// Bytes read from a process's output pipe.
    pub fn proc_output(&mut self, proc_id: ProcId, bytes: &[u8]) {
        if let Some(proc) = self.procs.get_mut(&proc_id) {
            if proc.role != ProcRole::Detached {
                proc.output.append(bytes);
            }
        }
    }

    /// A process was reaped. The shell reports any output still in its pipe first.
    pub fn proc_exited(&mut self, now: Now, proc_id: ProcId, exit: ProcExit) {
        if let Some(proc) = self.procs.remove(&proc_id) {
            self.proc_done(now, proc_id, proc, ProcResult::from_exit(exit));
        }
    }

    /// Times out the running events whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Now) {
        let due: Vec<(String, ProcId)> = self
            .components
            .iter()
            .filter_map(|(name, comp)| {
                let run = comp.running.as_ref()?;
                let id = run.current?;
                let started = self.procs.get(&id)?.pid.is_some();
                (started && run.request.deadline <= now.mono).then(|| (name.clone(), id))
            })
            .collect();
        for (name, id) in due {
            let Some(proc) = self.procs.get_mut(&id) else {
                continue;
            };
            // The hung process stays tracked (and unkilled) but nobody reads its output now.
            proc.role = ProcRole::Detached;
            let output = std::mem::take(&mut proc.output);
            let pid = proc.pid;
            self.script_done(now, &name, ProcResult::error(libc::ETIMEDOUT), output, pid);
        }
    }

    /// Kills every process still tracked, as freeing stock's `run_proc_context` does.
    pub fn shutdown(&mut self) {
        for proc in std::mem::take(&mut self.procs).into_values() {
            if let Some(pgid) = proc.pid {
                self.effects.push_back(Effect::KillGroup {
                    pgid,
                    signal: KillSignal::Kill,
                });
            }
        }
        for comp in self.components.values_mut() {
            comp.running = None;
            comp.queue.clear();
        }
    }

    fn reply(&mut self, client: ClientId, reqid: u32, body: EventReply) {
        self.effects.push_back(Effect::Reply {
            client,
            packet: EventPacket {
                version: 0,
                reqid,
                body,
            },
        });
    }

    /// Finds or sets up a component (`eventd_component_add`): its directory must exist.
    fn component(&mut self, name: Option<&str>) -> Result<(String, &mut Component), i32> {
        let Some(name) = name else {
            return Err(libc::EINVAL);
        };
        // Stock would happily follow "../" out of the events directory.
        if name.contains('/') || name == ".." {
            return Err(libc::EINVAL);
        }
        if !self.components.contains_key(name) {
            let dir = self.script_dir.join(name);
            self.dirs.check_component(&dir)?;
            self.components.insert(
                name.to_string(),
                Component {
                    dir,
                    queue: VecDeque::new(),
                    running: None,
                    results: HashMap::new(),
                    debug_running: false,
                },
            );
        }
        let comp = self.components.get_mut(name).ok_or(libc::ENOENT)?;
        Ok((name.to_string(), comp))
    }

    fn cmd_status(&mut self, req: &StatusRequest) -> Result<StatusReply, NonZeroI32> {
        let (_, comp) = self.component(req.component.as_deref()).map_err(nonzero)?;
        let event = req.event.as_deref().ok_or_else(|| nonzero(libc::EINVAL))?;
        comp.results
            .get(event)
            .map(ScriptList::to_reply)
            .ok_or_else(|| nonzero(libc::EINVAL))
    }

    fn cmd_script(&mut self, req: &ScriptRequest) -> i32 {
        let dir = match self.component(req.component.as_deref()) {
            Ok((_, comp)) => comp.dir.clone(),
            Err(errno) => return errno,
        };
        let Some(script) = req.script.as_deref() else {
            return libc::EINVAL;
        };
        let enable = req.action == ScriptAction::Enable;
        match self.dirs.set_enabled(&dir, script, enable) {
            Ok(()) => 0,
            Err(errno) => errno,
        }
    }

    /// `event_cmd_run_send` + `run_event_send`.
    fn cmd_run(&mut self, now: Now, client: ClientId, reqid: u32, req: RunRequest) {
        let name = match self.component(req.component.as_deref()) {
            Ok((name, _)) => name,
            Err(errno) => return self.reply(client, reqid, EventReply::Run(errno)),
        };
        let Some(event) = req.event else {
            // Stock fails to copy the NULL event name and reports it as an allocation failure.
            return self.reply(client, reqid, EventReply::Run(libc::ENOMEM));
        };
        let pending = PendingRun {
            client,
            reqid,
            args: req.args,
            deadline: now
                .mono
                .saturating_add(Duration::from_secs(u64::from(req.timeout))),
            continue_on_failure: req.flags & EVENT_RUN_ALL != 0,
            event,
        };
        let Some(comp) = self.components.get_mut(&name) else {
            return;
        };
        if let Some(run) = &comp.running {
            if run.is_monitor {
                self.cancel_running(&name);
            } else if pending.event == "monitor" {
                return self.reply(client, reqid, EventReply::Run(libc::ECANCELED));
            }
        }
        if let Some(comp) = self.components.get_mut(&name) {
            comp.queue.push_back(pending);
        }
        self.trigger(now, &name);
    }

    /// Cancels a running monitor event for a newcomer (`run_event_cancel`).
    fn cancel_running(&mut self, name: &str) {
        let Some(run) = self
            .components
            .get_mut(name)
            .and_then(|comp| comp.running.take())
        else {
            return;
        };
        self.kill_current(run.current);
        self.reply(
            run.request.client,
            run.request.reqid,
            EventReply::Run(libc::ECANCELED),
        );
    }

    /// Stops tracking a run's script process and SIGKILLs its group (`proc_destructor`).
    fn kill_current(&mut self, current: Option<ProcId>) {
        if let Some(proc) = current.and_then(|id| self.procs.remove(&id)) {
            if let Some(pgid) = proc.pid {
                self.effects.push_back(Effect::KillGroup {
                    pgid,
                    signal: KillSignal::Kill,
                });
            }
        }
    }

    /// Starts queued runs until one is actually running (`run_event_trigger`). Runs that fail
    /// to list their scripts, or have none, complete on the spot.
    fn trigger(&mut self, now: Now, name: &str) {
        loop {
            let Some(comp) = self.components.get_mut(name) else {
                return;
            };
            if comp.running.is_some() {
                return;
            }
            let Some(request) = comp.queue.pop_front() else {
                return;
            };
            log::trace!(
                "Running event {} with args \"{}\"",
                request.event,
                request.args.as_deref().unwrap_or("(null)")
            );
            let names = match self.dirs.list_scripts(&comp.dir) {
                Ok(names) => names,
                Err(errno) => {
                    if errno == libc::ENOENT {
                        log::warn!("event script dir {} removed", comp.dir.display());
                    } else {
                        log::warn!(
                            "failed to get script list for {}, ret={errno}",
                            comp.dir.display()
                        );
                    }
                    log::error!("get_script_list() failed, ret={errno}");
                    self.reply(request.client, request.reqid, EventReply::Run(errno));
                    continue;
                }
            };
            if names.is_empty() {
                self.finish_run(
                    name,
                    ActiveRun {
                        request,
                        list: ScriptList::default(),
                        index: 0,
                        current: None,
                        is_monitor: false,
                    },
                );
                continue;
            }
            let scripts = names
                .into_iter()
                .map(|name| ScriptResult {
                    name,
                    begin: Timeval::default(),
                    end: Timeval::default(),
                    summary: 0,
                    output: None,
                })
                .collect();
            let is_monitor = request.event == "monitor";
            comp.running = Some(ActiveRun {
                request,
                list: ScriptList {
                    summary: 0,
                    scripts,
                },
                index: 0,
                current: None,
                is_monitor,
            });
            self.start_script(now, name);
            return;
        }
    }

    fn new_proc(&mut self, role: ProcRole) -> ProcId {
        let id = ProcId(self.next_proc);
        self.next_proc += 1;
        self.procs.insert(
            id,
            Proc {
                pid: None,
                role,
                output: Output::default(),
            },
        );
        id
    }

    /// Spawns the running event's current script (`run_event_run_script`).
    fn start_script(&mut self, now: Now, name: &str) {
        let proc_id = self.new_proc(ProcRole::Script {
            component: name.to_string(),
        });
        let Some(comp) = self.components.get_mut(name) else {
            return;
        };
        let Some(run) = comp.running.as_mut() else {
            return;
        };
        let Some(script) = run.list.scripts.get_mut(run.index) else {
            return;
        };
        script.begin = now.wall;
        run.current = Some(proc_id);
        let path = comp.dir.join(format!("{}.script", script.name));
        // Arguments are split on single spaces with empty words dropped, as strtok does.
        let mut argv = vec![script.name.clone(), run.request.event.clone()];
        if let Some(args) = &run.request.args {
            argv.extend(args.split(' ').filter(|w| !w.is_empty()).map(String::from));
        }
        log::trace!(
            "Running {} with args \"{} {}\"",
            path.display(),
            argv[0],
            argv[1]
        );
        self.effects.push_back(Effect::Spawn {
            proc_id,
            path,
            argv,
        });
    }

    fn proc_done(&mut self, now: Now, proc_id: ProcId, proc: Proc, result: ProcResult) {
        match proc.role {
            ProcRole::Script { component } => {
                let is_current = self
                    .components
                    .get(&component)
                    .and_then(|c| c.running.as_ref())
                    .is_some_and(|run| run.current == Some(proc_id));
                if is_current {
                    self.script_done(now, &component, result, proc.output, None);
                }
            }
            ProcRole::Debug { component, target } => {
                if let Some(output) = proc.output.finish() {
                    log_output("event_debug", &output);
                }
                self.effects.push_back(Effect::KillGroup {
                    pgid: target,
                    signal: KillSignal::Term,
                });
                if let Some(comp) = self.components.get_mut(&component) {
                    comp.debug_running = false;
                }
            }
            ProcRole::Detached => {}
        }
    }

    /// The current script of `name`'s running event has finished (`run_event_next_script`).
    /// `hung_pid` is set when it timed out and is still running.
    fn script_done(
        &mut self,
        now: Now,
        name: &str,
        result: ProcResult,
        output: Output,
        hung_pid: Option<i32>,
    ) {
        let Some(comp) = self.components.get_mut(name) else {
            return;
        };
        let Some(run) = comp.running.as_mut() else {
            return;
        };
        run.current = None;
        let index = run.index;
        let Some(script) = run.list.scripts.get_mut(index) else {
            return;
        };
        script.end = now.wall;
        script.output = output.finish();
        if let Some(output) = &script.output {
            log_output(&script.name, output);
        }
        log::trace!(
            "Script {} finished sig={}, err={}, status={}",
            script.name,
            result.sig,
            result.err,
            result.status
        );
        script.summary = result.summary();
        let summary = script.summary;
        if summary != 0 && summary != -libc::ENOEXEC {
            run.list.summary = summary;
            if !run.request.continue_on_failure {
                run.list.scripts.truncate(index + 1);
                let event = run.request.event.clone();
                log::info!(
                    "{event} event {}",
                    if summary == -libc::ETIMEDOUT {
                        "timed out"
                    } else {
                        "failed"
                    }
                );
                if let Some(run) = comp.running.take() {
                    if summary == -libc::ETIMEDOUT {
                        if let Some(pid) = hung_pid {
                            self.run_debug(name, &event, pid);
                        }
                    }
                    self.finish_run(name, run);
                }
                self.trigger(now, name);
                return;
            }
        }
        run.index += 1;
        if run.index >= run.list.scripts.len() {
            if let Some(run) = comp.running.take() {
                self.finish_run(name, run);
            }
            self.trigger(now, name);
            return;
        }
        self.start_script(now, name);
    }

    /// Stores the result of a completed run and replies (`event_cmd_run_done`).
    fn finish_run(&mut self, name: &str, run: ActiveRun) {
        let summary = run.list.summary;
        let request = run.request;
        let result = if summary == -libc::ECANCELED {
            libc::ECANCELED
        } else {
            if let Some(comp) = self.components.get_mut(name) {
                comp.results.insert(request.event.clone(), run.list);
            }
            if summary == -libc::ETIMEDOUT {
                libc::ETIMEDOUT
            } else if summary != 0 {
                libc::ENOEXEC
            } else {
                0
            }
        };
        self.reply(request.client, request.reqid, EventReply::Run(result));
    }

    /// Starts the debug script on a hung script (`run_debug_send`).
    fn run_debug(&mut self, name: &str, event: &str, pid: i32) {
        let Some(debug) = self.debug_script.clone() else {
            return;
        };
        match self.components.get_mut(name) {
            Some(comp) if !comp.debug_running => comp.debug_running = true,
            _ => return,
        }
        let proc_id = self.new_proc(ProcRole::Debug {
            component: name.to_string(),
            target: pid,
        });
        let argv = vec![
            debug.display().to_string(),
            pid.to_string(),
            event.to_string(),
        ];
        log::trace!(
            "Running debug {} with args \"{} {}\"",
            debug.display(),
            argv[1],
            argv[2]
        );
        self.effects.push_back(Effect::Spawn {
            proc_id,
            path: debug,
            argv,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::Path;
    use std::rc::Rc;

    /// Component name -> (script name, enabled).
    type FakeTree = BTreeMap<String, Vec<(String, bool)>>;

    /// An in-memory events directory, shared between the harness and the context.
    #[derive(Debug, Clone, Default)]
    struct FakeDirs {
        components: Rc<RefCell<FakeTree>>,
    }

    impl FakeDirs {
        fn component_of(dir: &Path) -> String {
            dir.file_name().unwrap().to_string_lossy().into_owned()
        }
        fn is_enabled(&self, component: &str, script: &str) -> bool {
            self.components.borrow()[component]
                .iter()
                .any(|(n, e)| n == script && *e)
        }
    }

    impl ScriptDir for FakeDirs {
        fn check_component(&self, dir: &Path) -> Result<(), i32> {
            if self
                .components
                .borrow()
                .contains_key(&Self::component_of(dir))
            {
                Ok(())
            } else {
                Err(libc::ENOENT)
            }
        }
        fn list_scripts(&self, dir: &Path) -> Result<Vec<String>, i32> {
            self.components
                .borrow()
                .get(&Self::component_of(dir))
                .map(|s| s.iter().map(|(n, _)| n.clone()).collect())
                .ok_or(libc::ENOENT)
        }
        fn set_enabled(&self, dir: &Path, script: &str, enable: bool) -> Result<(), i32> {
            let mut map = self.components.borrow_mut();
            let scripts = map.get_mut(&Self::component_of(dir)).ok_or(libc::ENOENT)?;
            let entry = scripts
                .iter_mut()
                .find(|(n, _)| n == script)
                .ok_or(libc::ENOENT)?;
            entry.1 = enable;
            Ok(())
        }
    }

    /// A process the harness pretends to run.
    #[derive(Debug, Clone)]
    struct FakeProc {
        id: ProcId,
        pid: i32,
        argv: Vec<String>,
    }

    /// Drives an [`EventContext`] the way the shell does, with scripted process outcomes.
    struct Harness {
        ctx: EventContext<FakeDirs>,
        dirs: FakeDirs,
        now_us: u64,
        next_pid: i32,
        running: Vec<FakeProc>,
        replies: Vec<(ClientId, EventReplyPacket)>,
        kills: Vec<(i32, KillSignal)>,
        spawned: Vec<Vec<String>>,
        /// Makes the next spawn fail with this errno.
        fail_next_spawn: Option<i32>,
    }

    impl Harness {
        fn new(debug: bool) -> Self {
            let dirs = FakeDirs::default();
            let ctx = EventContext::new(
                dirs.clone(),
                PathBuf::from("/etc/ctdb/events"),
                debug.then(|| PathBuf::from("/etc/ctdb/debug.sh")),
            );
            Harness {
                ctx,
                dirs,
                now_us: 1_000_000,
                next_pid: 100,
                running: Vec::new(),
                replies: Vec::new(),
                kills: Vec::new(),
                spawned: Vec::new(),
                fail_next_spawn: None,
            }
        }

        fn add_component(&self, name: &str, scripts: &[(&str, bool)]) {
            self.dirs.components.borrow_mut().insert(
                name.to_string(),
                scripts.iter().map(|(n, e)| (n.to_string(), *e)).collect(),
            );
        }

        fn now(&self) -> Now {
            Now {
                mono: Instant::from_micros(self.now_us),
                wall: Timeval {
                    tv_sec: i64::try_from(self.now_us / 1_000_000).unwrap(),
                    tv_usec: i64::try_from(self.now_us % 1_000_000).unwrap(),
                },
            }
        }

        fn advance(&mut self, secs: u64) {
            self.now_us += secs * 1_000_000;
            let now = self.now();
            if self
                .ctx
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now.mono)
            {
                self.ctx.handle_timeout(now);
            }
            self.drain();
        }

        /// Executes effects; a disabled script fails to spawn with EACCES like the real shell.
        fn drain(&mut self) {
            while let Some(effect) = self.ctx.poll_effect() {
                match effect {
                    Effect::Reply { client, packet } => self.replies.push((client, packet)),
                    Effect::KillGroup { pgid, signal } => {
                        self.kills.push((pgid, signal));
                        if signal == KillSignal::Kill {
                            self.running.retain(|p| p.pid != pgid);
                        }
                    }
                    Effect::Spawn {
                        proc_id,
                        path,
                        argv,
                    } => {
                        self.spawned.push(argv.clone());
                        let component = path
                            .parent()
                            .and_then(Path::file_name)
                            .map(|c| c.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let disabled = path.starts_with("/etc/ctdb/events")
                            && !self.dirs.is_enabled(&component, &argv[0]);
                        let failure = self
                            .fail_next_spawn
                            .take()
                            .or_else(|| disabled.then_some(libc::EACCES));
                        let now = self.now();
                        if let Some(errno) = failure {
                            self.ctx
                                .spawned(now, proc_id, SpawnOutcome::Failed { errno });
                        } else {
                            let pid = self.next_pid;
                            self.next_pid += 1;
                            self.running.push(FakeProc {
                                id: proc_id,
                                pid,
                                argv,
                            });
                            self.ctx
                                .spawned(now, proc_id, SpawnOutcome::Started { pid });
                        }
                    }
                }
            }
        }

        fn request(&mut self, client: u64, reqid: u32, body: EventRequest) {
            let now = self.now();
            self.ctx.handle_request(
                now,
                ClientId(client),
                EventPacket {
                    version: 0,
                    reqid,
                    body,
                },
            );
            self.drain();
        }

        fn run(&mut self, client: u64, reqid: u32, event: &str, timeout: u32, flags: u32) {
            self.request(
                client,
                reqid,
                EventRequest::Run(RunRequest {
                    component: Some("legacy".into()),
                    event: Some(event.into()),
                    args: None,
                    timeout,
                    flags,
                }),
            );
        }

        fn status(&mut self, event: &str) -> EventReply {
            self.request(
                9,
                999,
                EventRequest::Status(StatusRequest {
                    component: Some("legacy".into()),
                    event: Some(event.into()),
                }),
            );
            self.replies.pop().unwrap().1.body
        }

        /// The oldest running script process, by script name.
        fn proc_named(&self, name: &str) -> FakeProc {
            self.running
                .iter()
                .find(|p| p.argv[0] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} not running: {:?}", self.running))
        }

        fn finish(&mut self, name: &str, output: &[u8], exit: ProcExit) {
            let proc = self.proc_named(name);
            self.running.retain(|p| p.pid != proc.pid);
            if !output.is_empty() {
                self.ctx.proc_output(proc.id, output);
            }
            let now = self.now();
            self.ctx.proc_exited(now, proc.id, exit);
            self.drain();
        }

        fn take_replies(&mut self) -> Vec<(u64, u32, EventReply)> {
            self.replies
                .drain(..)
                .map(|(c, p)| (c.0, p.reqid, p.body))
                .collect()
        }
    }

    fn status_ok(reply: EventReply) -> StatusReply {
        match reply {
            EventReply::Status(Ok(status)) => status,
            other => panic!("expected a status, got {other:?}"),
        }
    }

    fn results(status: &StatusReply) -> Vec<(String, i32)> {
        status
            .scripts
            .iter()
            .map(|s| (s.name.clone().unwrap(), s.result))
            .collect()
    }

    #[test]
    fn scripts_run_in_order_and_disabled_ones_are_skipped() {
        let mut h = Harness::new(false);
        h.add_component(
            "legacy",
            &[("01.a", true), ("02.off", false), ("03.c", true)],
        );
        h.request(
            1,
            7,
            EventRequest::Run(RunRequest {
                component: Some("legacy".into()),
                event: Some("takeip".into()),
                args: Some(" eth0  10.0.0.1 24".into()),
                timeout: 30,
                flags: 0,
            }),
        );
        assert_eq!(
            h.spawned,
            vec![vec!["01.a", "takeip", "eth0", "10.0.0.1", "24"]]
        );
        h.finish("01.a", b"hello\n", ProcExit::Exited(0));
        assert_eq!(h.spawned.len(), 3, "02.off is tried, 03.c started");
        assert!(h.take_replies().is_empty());
        h.finish("03.c", b"", ProcExit::Exited(0));
        assert_eq!(h.take_replies(), vec![(1, 7, EventReply::Run(0))]);
        let status = status_ok(h.status("takeip"));
        assert_eq!(status.summary, 0);
        assert_eq!(
            results(&status),
            vec![
                ("01.a".into(), 0),
                ("02.off".into(), -libc::ENOEXEC),
                ("03.c".into(), 0)
            ]
        );
        assert_eq!(status.scripts[0].output.as_deref(), Some(&b"hello\n"[..]));
        assert_eq!(status.scripts[2].output, None);
        assert!(h.ctx.tracked_processes().is_empty());
    }

    #[test]
    fn run_stops_at_first_failure_unless_run_all() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true), ("02.b", true), ("03.c", true)]);
        h.run(1, 1, "monitor", 30, 0);
        h.finish("01.a", b"", ProcExit::Exited(0));
        h.finish("02.b", b"bad\n", ProcExit::Exited(3));
        assert_eq!(
            h.take_replies(),
            vec![(1, 1, EventReply::Run(libc::ENOEXEC))]
        );
        let status = status_ok(h.status("monitor"));
        assert_eq!(status.summary, 3);
        assert_eq!(
            results(&status),
            vec![("01.a".into(), 0), ("02.b".into(), 3)]
        );

        h.run(1, 2, "startup", 30, EVENT_RUN_ALL);
        h.finish("01.a", b"", ProcExit::Exited(2));
        h.finish("02.b", b"", ProcExit::Exited(0));
        h.finish("03.c", b"", ProcExit::Signaled(9));
        assert_eq!(
            h.take_replies(),
            vec![(1, 2, EventReply::Run(libc::ENOEXEC))]
        );
        let status = status_ok(h.status("startup"));
        assert_eq!(status.summary, -libc::EINTR, "the last failure wins");
        assert_eq!(
            results(&status),
            vec![
                ("01.a".into(), 2),
                ("02.b".into(), 0),
                ("03.c".into(), -libc::EINTR)
            ]
        );
    }

    #[test]
    fn exit_codes_above_63_read_as_errno() {
        assert_eq!(
            ProcResult::from_exit(ProcExit::Exited(65)).summary(),
            -libc::EPERM
        );
        assert_eq!(ProcResult::from_exit(ProcExit::Exited(64)).summary(), 0);
        assert_eq!(
            ProcResult::from_exit(ProcExit::Exited(64 + libc::EACCES)).summary(),
            -libc::ENOEXEC
        );
        assert_eq!(ProcResult::from_exit(ProcExit::Exited(255)).summary(), 255);
        assert_eq!(ProcResult::from_exit(ProcExit::Exited(63)).summary(), 63);
        assert_eq!(
            ProcResult::from_exit(ProcExit::Signaled(15)).summary(),
            -libc::EINTR
        );
    }

    #[test]
    fn exit_189_reads_as_cancelled_and_is_not_stored() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true)]);
        h.run(1, 1, "monitor", 30, 0);
        h.finish("01.a", b"", ProcExit::Exited(64 + libc::ECANCELED));
        assert_eq!(
            h.take_replies(),
            vec![(1, 1, EventReply::Run(libc::ECANCELED))]
        );
        assert_eq!(
            h.status("monitor"),
            EventReply::Status(Err(nonzero(libc::EINVAL)))
        );
    }

    #[test]
    fn output_is_a_c_string() {
        let mut out = Output::default();
        out.append(b"ab\0cd");
        out.append(b"ef");
        assert_eq!(out.clone().finish(), Some(b"abef".to_vec()));
        out.append(b"\0");
        assert_eq!(out.finish(), Some(b"abef".to_vec()));
        let mut empty = Output::default();
        empty.append(b"\0x");
        assert_eq!(empty.finish(), Some(Vec::new()));
        assert_eq!(Output::default().finish(), None);
        let mut big = Output::default();
        big.append(&vec![b'x'; MAX_SCRIPT_OUTPUT + 10]);
        big.append(b"more");
        assert_eq!(big.finish().map(|b| b.len()), Some(MAX_SCRIPT_OUTPUT));
    }

    #[test]
    fn timeout_without_debug_script_leaves_the_script_running() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true), ("02.hang", true)]);
        h.run(1, 1, "startrecovery", 5, 0);
        h.finish("01.a", b"", ProcExit::Exited(0));
        let hung = h.proc_named("02.hang");
        h.ctx.proc_output(hung.id, b"child 1234\n");
        assert_eq!(
            h.ctx.poll_timeout(),
            Some(Instant::from_micros(1_000_000 + 5_000_000))
        );
        h.advance(4);
        assert!(h.take_replies().is_empty());
        h.advance(1);
        assert_eq!(
            h.take_replies(),
            vec![(1, 1, EventReply::Run(libc::ETIMEDOUT))]
        );
        assert!(h.kills.is_empty(), "stock does not kill a hung script");
        assert_eq!(h.ctx.tracked_processes(), vec![hung.pid]);
        let status = status_ok(h.status("startrecovery"));
        assert_eq!(status.summary, -libc::ETIMEDOUT);
        assert_eq!(status.scripts[1].result, -libc::ETIMEDOUT);
        assert_eq!(
            status.scripts[1].output.as_deref(),
            Some(&b"child 1234\n"[..])
        );
        // Its later output and exit change nothing.
        h.ctx.proc_output(hung.id, b"late");
        h.finish("02.hang", b"", ProcExit::Exited(0));
        assert!(h.take_replies().is_empty());
        assert!(h.ctx.tracked_processes().is_empty());
        h.ctx.shutdown();
        h.drain();
        assert!(h.kills.is_empty());
    }

    #[test]
    fn timeout_runs_debug_script_then_terms_the_group() {
        let mut h = Harness::new(true);
        h.add_component("legacy", &[("01.hang", true)]);
        h.run(1, 1, "monitor", 1, 0);
        let hung = h.proc_named("01.hang");
        h.advance(1);
        assert_eq!(
            h.take_replies(),
            vec![(1, 1, EventReply::Run(libc::ETIMEDOUT))]
        );
        let debug_argv = h.spawned.last().unwrap().clone();
        assert_eq!(
            debug_argv,
            vec![
                "/etc/ctdb/debug.sh".to_string(),
                hung.pid.to_string(),
                "monitor".into()
            ]
        );
        // A second hang while the debug script runs gets no debug run of its own.
        h.run(1, 2, "monitor", 0, 0);
        let second = h.running.last().unwrap().clone();
        assert_eq!(second.argv[0], "01.hang");
        h.advance(0);
        assert_eq!(
            h.take_replies(),
            vec![(1, 2, EventReply::Run(libc::ETIMEDOUT))]
        );
        assert_eq!(h.spawned.len(), 3);
        assert!(h.kills.is_empty());
        h.finish("/etc/ctdb/debug.sh", b"stack\n", ProcExit::Exited(0));
        assert_eq!(h.kills, vec![(hung.pid, KillSignal::Term)]);
        // Shutdown SIGKILLs whatever is still tracked.
        h.ctx.shutdown();
        h.drain();
        let mut killed: Vec<i32> = h.kills[1..].iter().map(|k| k.0).collect();
        killed.sort_unstable();
        assert_eq!(killed, vec![hung.pid, second.pid]);
    }

    #[test]
    fn timeout_zero_expires_at_once_and_queue_time_counts() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true)]);
        h.run(1, 1, "startup", 10, 0);
        h.run(2, 2, "takeip", 3, 0);
        h.advance(5);
        assert!(h.take_replies().is_empty());
        h.finish("01.a", b"", ProcExit::Exited(0));
        assert_eq!(h.take_replies(), vec![(1, 1, EventReply::Run(0))]);
        // takeip's deadline passed while it waited: its first script times out immediately.
        h.advance(0);
        assert_eq!(
            h.take_replies(),
            vec![(2, 2, EventReply::Run(libc::ETIMEDOUT))]
        );
    }

    #[test]
    fn new_event_cancels_running_monitor_and_monitor_yields_to_others() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true)]);
        h.run(1, 1, "monitor", 30, 0);
        let monitor = h.proc_named("01.a");
        h.run(2, 2, "takeip", 30, 0);
        assert_eq!(
            h.take_replies(),
            vec![(1, 1, EventReply::Run(libc::ECANCELED))]
        );
        assert_eq!(h.kills, vec![(monitor.pid, KillSignal::Kill)]);
        // Its exit after the kill is of no interest.
        let now = h.now();
        h.ctx.proc_exited(now, monitor.id, ProcExit::Signaled(9));
        h.drain();
        assert!(h.take_replies().is_empty());

        h.run(3, 3, "monitor", 30, 0);
        assert_eq!(
            h.take_replies(),
            vec![(3, 3, EventReply::Run(libc::ECANCELED))]
        );
        h.finish("01.a", b"", ProcExit::Exited(0));
        assert_eq!(h.take_replies(), vec![(2, 2, EventReply::Run(0))]);
        assert_eq!(
            h.status("monitor"),
            EventReply::Status(Err(nonzero(libc::EINVAL)))
        );

        // A monitor cancels a running monitor too.
        h.run(1, 4, "monitor", 30, 0);
        h.run(1, 5, "monitor", 30, 0);
        assert_eq!(
            h.take_replies(),
            vec![(1, 4, EventReply::Run(libc::ECANCELED))]
        );
        h.finish("01.a", b"", ProcExit::Exited(0));
        assert_eq!(h.take_replies(), vec![(1, 5, EventReply::Run(0))]);
    }

    #[test]
    fn queued_events_run_in_order() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true)]);
        h.run(1, 1, "startup", 30, 0);
        h.run(1, 2, "takeip", 30, 0);
        h.run(2, 3, "releaseip", 30, 0);
        assert_eq!(h.running.len(), 1);
        h.finish("01.a", b"", ProcExit::Exited(0));
        h.finish("01.a", b"", ProcExit::Exited(0));
        h.finish("01.a", b"", ProcExit::Exited(0));
        let events: Vec<String> = h.spawned.iter().map(|a| a[1].clone()).collect();
        assert_eq!(events, vec!["startup", "takeip", "releaseip"]);
        assert_eq!(
            h.take_replies(),
            vec![
                (1, 1, EventReply::Run(0)),
                (1, 2, EventReply::Run(0)),
                (2, 3, EventReply::Run(0))
            ]
        );
    }

    #[test]
    fn disconnect_abandons_the_clients_runs() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true)]);
        h.run(1, 1, "startup", 30, 0);
        let first = h.proc_named("01.a");
        h.run(1, 2, "takeip", 30, 0);
        h.run(2, 3, "releaseip", 30, 0);
        let now = h.now();
        h.ctx.client_disconnected(now, ClientId(1));
        h.drain();
        assert_eq!(h.kills, vec![(first.pid, KillSignal::Kill)]);
        assert_eq!(h.spawned.last().unwrap()[1], "releaseip");
        h.finish("01.a", b"", ProcExit::Exited(0));
        assert_eq!(h.take_replies(), vec![(2, 3, EventReply::Run(0))]);
        // A monitor afterwards is not cancelled by a ghost.
        h.run(2, 4, "monitor", 30, 0);
        h.finish("01.a", b"", ProcExit::Exited(0));
        assert_eq!(h.take_replies(), vec![(2, 4, EventReply::Run(0))]);
    }

    #[test]
    fn component_errors_and_empty_components() {
        let mut h = Harness::new(false);
        h.add_component("empty", &[]);
        h.request(
            1,
            1,
            EventRequest::Run(RunRequest {
                component: Some("nosuch".into()),
                event: Some("monitor".into()),
                args: None,
                timeout: 30,
                flags: 0,
            }),
        );
        h.request(
            1,
            2,
            EventRequest::Run(RunRequest {
                component: Some("empty".into()),
                event: Some("monitor".into()),
                args: None,
                timeout: 30,
                flags: 0,
            }),
        );
        h.request(
            1,
            3,
            EventRequest::Status(StatusRequest {
                component: Some("empty".into()),
                event: Some("monitor".into()),
            }),
        );
        h.request(
            1,
            4,
            EventRequest::Status(StatusRequest {
                component: Some("empty".into()),
                event: Some("startup".into()),
            }),
        );
        h.request(
            1,
            5,
            EventRequest::Run(RunRequest {
                component: Some("../etc".into()),
                ..RunRequest::default()
            }),
        );
        h.request(
            1,
            6,
            EventRequest::Run(RunRequest {
                component: Some("empty".into()),
                ..RunRequest::default()
            }),
        );
        assert_eq!(
            h.take_replies(),
            vec![
                (1, 1, EventReply::Run(libc::ENOENT)),
                (1, 2, EventReply::Run(0)),
                (
                    1,
                    3,
                    EventReply::Status(Ok(StatusReply {
                        summary: 0,
                        scripts: vec![]
                    }))
                ),
                (1, 4, EventReply::Status(Err(nonzero(libc::EINVAL)))),
                (1, 5, EventReply::Run(libc::EINVAL)),
                (1, 6, EventReply::Run(libc::ENOMEM)),
            ]
        );
    }

    #[test]
    fn removed_directory_fails_the_run_but_keeps_results() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true)]);
        h.run(1, 1, "monitor", 30, 0);
        h.finish("01.a", b"", ProcExit::Exited(0));
        h.take_replies();
        h.dirs.components.borrow_mut().remove("legacy");
        h.run(1, 2, "monitor", 30, 0);
        assert_eq!(
            h.take_replies(),
            vec![(1, 2, EventReply::Run(libc::ENOENT))]
        );
        assert_eq!(status_ok(h.status("monitor")).scripts.len(), 1);
    }

    #[test]
    fn script_command_toggles_and_reports_errors() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true)]);
        let script = |component: &str, name: Option<&str>, action| {
            EventRequest::Script(ScriptRequest {
                component: Some(component.into()),
                script: name.map(Into::into),
                action,
            })
        };
        h.request(1, 1, script("legacy", Some("01.a"), ScriptAction::Disable));
        assert!(!h.dirs.is_enabled("legacy", "01.a"));
        h.request(1, 2, script("legacy", Some("01.a"), ScriptAction::Enable));
        assert!(h.dirs.is_enabled("legacy", "01.a"));
        h.request(1, 3, script("legacy", Some("99.x"), ScriptAction::Enable));
        h.request(1, 4, script("nosuch", Some("01.a"), ScriptAction::Enable));
        h.request(1, 5, script("legacy", None, ScriptAction::Enable));
        assert_eq!(
            h.take_replies(),
            vec![
                (1, 1, EventReply::Script(0)),
                (1, 2, EventReply::Script(0)),
                (1, 3, EventReply::Script(libc::ENOENT)),
                (1, 4, EventReply::Script(libc::ENOENT)),
                (1, 5, EventReply::Script(libc::EINVAL)),
            ]
        );
    }

    #[test]
    fn spawn_failure_is_a_script_result() {
        let mut h = Harness::new(false);
        h.add_component("legacy", &[("01.a", true), ("02.b", true)]);
        // As if 01.a vanished between listing and spawning.
        h.fail_next_spawn = Some(libc::ENOENT);
        h.run(1, 1, "monitor", 30, 0);
        assert_eq!(
            h.take_replies(),
            vec![(1, 1, EventReply::Run(libc::ENOEXEC))]
        );
        let status = status_ok(h.status("monitor"));
        assert_eq!(status.summary, -libc::ENOENT);
        assert_eq!(results(&status), vec![("01.a".into(), -libc::ENOENT)]);
    }
}
