//! Runs one command as its own process group: the pure-ish core under the executor actors.
//!
//! Owns: spawning `<shell> -c <command>` in a new process group with the `DISTCRON_*`
//! environment, capturing stdout+stderr through one pipe (so their order is kept) into a
//! bounded head+tail buffer, enforcing the timeout, killing the whole group (grandchildren too)
//! on timeout or kill request, and [`classify`]ing the outcome into a [`RunStatus`].
//! Leaves to others: run records, scheduling, and deciding *when* to kill (the executor sends a
//! [`KillReason`] through a oneshot channel).
//!
//! Life of a run, as [`run_command`] implements it:
//! - The run ends when its shell exits. Its output pipe is then drained for up to `kill_grace`;
//!   whatever is still alive in its process group after that (a `sleep 100 &` left behind, with
//!   or without the pipe) is sent SIGTERM, then SIGKILL after `kill_grace`, so nothing of a
//!   finished run is left running and the reader always finishes.
//! - Timeout and kill: SIGTERM to the group, SIGKILL to the group after `kill_grace` if the
//!   shell is still alive; then every process carrying the run's `DISTCRON_RUN_ID` (also one
//!   that left the group with `setsid`) is terminated as a restart does (`orphans::terminate`),
//!   then the same leftover sweep as above. A run that ends by itself leaves processes that
//!   left its group alone (a job may start a daemon on purpose).
//! - Kill channel: a `oneshot::Receiver<KillReason>`; a value means "kill now", a dropped sender
//!   means "nobody will ever ask" (never a kill).
//! - The worker's own `DISTCRON_*` variables (config, API token) are removed from the job's
//!   environment; the job sees only the five per-run `DISTCRON_*` values and its own `env`.
//! - If the future is dropped before it finishes (its task aborted), the group is SIGKILLed.
//! - Before exec the shell gets the job's resource limits, its user and the death signal
//!   (`launch.rs`); right after the spawn its pid (= process group) and start time from `/proc`
//!   are reported ([`Spawned`]) so the run's `running` record can name them.
//! - The shell's pid is registered with the subreaper (`subreaper.rs`) until tokio has collected
//!   its exit status, so re-parented leftovers are reaped without stealing that status.
//!
//! Command output is never logged.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::actors::launch::{self, LaunchPlan};
use crate::actors::live::LiveRun;
use crate::actors::messages::{KillReason, RunSpec};
use crate::actors::{orphans, procfs, subreaper};
use crate::domain::{JobLimits, RunId, RunStatus};

/// Read chunk size for the output pipe.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often the leftover sweep checks whether the group is gone.
const GROUP_POLL: Duration = Duration::from_millis(50);
/// Upper bound on waiting for the pipe after the group was SIGKILLed (only a process that left
/// the group, e.g. with `setsid`, can still hold it then).
const AFTER_SIGKILL_WAIT: Duration = Duration::from_millis(500);

/// What to run and how (one run of one job).
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Shell binary, run as `<shell> -c <command>`.
    pub shell: String,
    /// The command text.
    pub command: String,
    /// Extra environment (the job's `env`).
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` = the worker's.
    pub working_dir: Option<PathBuf>,
    /// Timeout; `None` = none.
    pub timeout: Option<Duration>,
    /// SIGTERM -> SIGKILL grace, and how long the pipe is drained after the shell exits.
    pub kill_grace: Duration,
    /// Output cap in bytes: the first half and the last half are kept.
    pub max_output_bytes: usize,
    /// `DISTCRON_JOB`.
    pub job: String,
    /// `DISTCRON_RUN_ID`.
    pub run_id: String,
    /// `DISTCRON_SCHEDULED_AT` (RFC 3339).
    pub scheduled_at: String,
    /// `DISTCRON_ATTEMPT`.
    pub attempt: u32,
    /// `DISTCRON_FENCE`.
    pub fence: i64,
    /// Resource limits applied before exec.
    pub limits: Option<JobLimits>,
    /// Account to run as (root node only).
    pub run_as_user: Option<String>,
    /// Group to run as, with `run_as_user`.
    pub run_as_group: Option<String>,
    /// Users `run_as_user` may name (`executor.allowed_users`).
    pub allowed_users: Vec<String>,
    /// SIGTERM to the shell when distcron dies (`PR_SET_PDEATHSIG`).
    pub death_signal: bool,
    /// Where the output is captured, so followers can read it live (`live.rs`); `None` = a
    /// private capture of `max_output_bytes`.
    pub live: Option<Arc<LiveRun>>,
}

impl ProcessSpec {
    /// The process spec for a dispatched run.
    pub fn from_run(spec: &RunSpec) -> Self {
        Self {
            shell: spec.shell.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.as_ref().map(PathBuf::from),
            timeout: spec.timeout,
            kill_grace: spec.kill_grace,
            max_output_bytes: spec.max_output_bytes,
            job: spec.job.to_string(),
            run_id: spec.run.to_string(),
            scheduled_at: spec.scheduled_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            attempt: spec.attempt,
            fence: spec.fence.0,
            limits: spec.launch.limits,
            run_as_user: spec.launch.run_as_user.clone(),
            run_as_group: spec.launch.run_as_group.clone(),
            allowed_users: spec.launch.allowed_users.clone(),
            death_signal: spec.launch.death_signal,
            live: None,
        }
    }
}

/// The shell of a run was started: what identifies its processes from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// Its pid, which is its process group id.
    pub pgid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22); `None` when
    /// `/proc` could not be read.
    pub start_ticks: Option<u64>,
}

/// Why a process ended other than by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndedBy {
    /// It exceeded its timeout (`after`) and its group was killed.
    Timeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// Someone asked to kill it.
    Killed(KillReason),
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The working directory is missing or not a directory.
    #[error("working directory {dir} is not usable: {reason}")]
    WorkingDir {
        /// The directory.
        dir: String,
        /// What is wrong.
        reason: String,
    },
    /// The output pipe could not be created.
    #[error("cannot create the output pipe")]
    Pipe(#[source] std::io::Error),
    /// The run's account or limits cannot be applied on this worker.
    #[error("{0}")]
    Launch(launch::LaunchError),
    /// `spawn` failed (shell not found, not executable, ...).
    #[error("cannot start shell {shell}")]
    Spawn {
        /// The shell.
        shell: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How one process run went.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessOutcome {
    /// When the process was started (or the start attempted).
    pub started_at: DateTime<Utc>,
    /// When the run ended (shell exited and the group was swept, or spawn failed).
    pub ended_at: DateTime<Utc>,
    /// Exit code, when the shell exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended the shell, when one did.
    pub signal: Option<i32>,
    /// Set when timeout or a kill request ended it.
    pub ended_by: Option<EndedBy>,
    /// Set when the process could not be started; the text says why.
    pub spawn_error: Option<String>,
    /// Combined stdout+stderr, lossy UTF-8; head + marker + tail when truncated.
    pub output: String,
    /// Total bytes the command printed.
    pub output_bytes: u64,
    /// True when `output` holds only the head and tail.
    pub truncated: bool,
    /// The resource limits the run had (to name a limit as the likely end).
    pub limits: Option<JobLimits>,
}

/// Turns an outcome into the run's final status and its `err` text ("" on success).
pub fn classify(outcome: &ProcessOutcome) -> (RunStatus, String) {
    if let Some(reason) = &outcome.spawn_error {
        return (RunStatus::Error, reason.clone());
    }
    match &outcome.ended_by {
        Some(EndedBy::Timeout { after }) => {
            return (RunStatus::Timeout, format!("timed out after {}s", after.as_secs_f64()));
        }
        Some(EndedBy::Killed(reason)) => return (RunStatus::Killed, reason.describe().to_string()),
        None => {}
    }
    let (status, err) = match (outcome.exit_code, outcome.signal) {
        (Some(0), _) => return (RunStatus::Succeeded, String::new()),
        (Some(code), _) => (RunStatus::Failed, format!("exit code {code}")),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map(Signal::as_str).unwrap_or("unknown signal");
            (RunStatus::Failed, format!("killed by signal {sig} ({name})"))
        }
        (None, None) => (RunStatus::Error, "process ended without an exit status".to_string()),
    };
    match outcome.limits.as_ref().and_then(|l| limit_reason(l, outcome.exit_code, outcome.signal)) {
        Some(reason) => (status, format!("{err}; {reason}")),
        None => (status, err),
    }
}

/// Names the resource limit that most likely ended a failed run, as `limit: ...` text.
///
/// SIGXCPU (directly, or as a shell's exit code 128 + 24) is the CPU limit for sure; SIGKILL
/// with a CPU limit is the hard limit one second later. A failed allocation under the memory
/// limit shows only as the program's own failure (exit code, SIGSEGV or SIGABRT), so the
/// limit is named as the likely cause, beside the program's output.
pub fn limit_reason(limits: &JobLimits, exit_code: Option<i32>, signal: Option<i32>) -> Option<String> {
    let xcpu = Signal::SIGXCPU as i32;
    let sig = signal.or_else(|| exit_code.filter(|c| *c > 128).map(|c| c - 128));
    if let Some(secs) = limits.max_cpu_secs {
        if sig == Some(xcpu) {
            return Some(format!("limit: cpu limit of {secs} s reached (SIGXCPU)"));
        }
        if sig == Some(Signal::SIGKILL as i32) {
            return Some(format!("limit: cpu limit of {secs} s reached (SIGKILL at the hard limit, {secs} s + 1 s)"));
        }
    }
    if let Some(bytes) = limits.max_memory_bytes {
        let memory_like = matches!(exit_code, Some(c) if c != 0)
            || [Signal::SIGSEGV, Signal::SIGABRT, Signal::SIGBUS, Signal::SIGKILL]
                .iter()
                .any(|s| sig == Some(*s as i32));
        if memory_like {
            return Some(format!(
                "limit: memory limit of {bytes} bytes (max_memory_bytes) set; a failed allocation ends a program this way, see its output"
            ));
        }
    }
    None
}

/// SIGKILLs the group when dropped while armed (the run's future was cancelled).
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Sends `sig` to the group; a group that is already gone is not an error.
fn signal_group(pgid: Pid, sig: Signal) {
    match killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => log::warn!("Signalling a run's process group failed. pgid={pgid} signal={sig} error={e}"),
    }
}

/// True while a live (not zombie) process is in the group.
///
/// `killpg(0)` also counts zombies, and orphaned members are reaped by init at its own pace
/// (about once a second in some containers), so on Linux `/proc` decides; elsewhere, or when
/// `/proc` cannot be read, the signal test alone does.
fn group_alive(pgid: Pid) -> bool {
    if matches!(killpg(pgid, None), Err(Errno::ESRCH)) {
        return false;
    }
    live_members_in_proc(pgid).is_none_or(|n| n > 0)
}

/// Non-zombie processes whose process group is `pgid`, per `/proc`; `None` when unreadable.
fn live_members_in_proc(pgid: Pid) -> Option<usize> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut live = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Processes may vanish while we look; a missing file just means "not alive".
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the ")" that closes the command name: state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        if pgrp == Some(pgid.as_raw()) && !matches!(state, Some("Z") | Some("X")) {
            live += 1;
        }
    }
    Some(live)
}

/// Reads the pipe to EOF into `capture`. Read errors end the read (the output is best effort).
async fn read_all(pipe: &mut tokio::net::unix::pipe::Receiver, capture: &LiveRun) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => capture.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("Reading a run's output failed; keeping what was read. error={e}");
                return;
            }
        }
    }
}

fn spawn_failed(started_at: DateTime<Utc>, error: &ExecError) -> ProcessOutcome {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    ProcessOutcome {
        started_at,
        ended_at: Utc::now(),
        exit_code: None,
        signal: None,
        ended_by: None,
        spawn_error: Some(text),
        output: String::new(),
        output_bytes: 0,
        truncated: false,
        limits: None,
    }
}

/// Runs `spec` to its end (see the module docs for the life of a run) and reports how it went.
///
/// `kill`: send a [`KillReason`] to kill the run (SIGTERM to the group, SIGKILL after
/// `kill_grace`); dropping the sender never kills.
pub async fn run_command(spec: &ProcessSpec, kill: oneshot::Receiver<KillReason>) -> ProcessOutcome {
    run_command_reporting(spec, kill, None).await
}

/// [`run_command`], sending [`Spawned`] on `spawned` as soon as the shell runs.
pub async fn run_command_reporting(
    spec: &ProcessSpec,
    mut kill: oneshot::Receiver<KillReason>,
    spawned: Option<oneshot::Sender<Spawned>>,
) -> ProcessOutcome {
    let started_at = Utc::now();
    let node_is_root = nix::unistd::geteuid().is_root();
    let identity = match &spec.run_as_user {
        Some(user) => {
            match launch::resolve_identity(user, spec.run_as_group.as_deref(), &spec.allowed_users, node_is_root) {
                Ok(id) => Some(id),
                Err(e) => return spawn_failed(started_at, &ExecError::Launch(e)),
            }
        }
        None => None,
    };
    let plan = match LaunchPlan::new(spec.limits.as_ref(), identity, spec.death_signal, node_is_root) {
        Ok(p) => p,
        Err(e) => return spawn_failed(started_at, &ExecError::Launch(e)),
    };
    if let Some(dir) = &spec.working_dir {
        let reason = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some("not a directory".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = reason {
            let error = ExecError::WorkingDir { dir: dir.display().to_string(), reason };
            return spawn_failed(started_at, &error);
        }
    }
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return spawn_failed(started_at, &ExecError::Pipe(e)),
    };
    let writer_err = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return spawn_failed(started_at, &ExecError::Pipe(e)),
    };

    let mut cmd = tokio::process::Command::new(&spec.shell);
    cmd.arg("-c").arg(&spec.command);
    // The worker's own settings (and its API token) are not the job's business.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DISTCRON_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(&spec.env)
        // ARCHITECTURE.md: each run gets these so jobs can be idempotent; set last so the job's
        // env cannot shadow them.
        .env("DISTCRON_JOB", &spec.job)
        .env("DISTCRON_RUN_ID", &spec.run_id)
        .env("DISTCRON_SCHEDULED_AT", &spec.scheduled_at)
        .env("DISTCRON_ATTEMPT", spec.attempt.to_string())
        .env("DISTCRON_FENCE", spec.fence.to_string())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_err)
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    launch::install(&mut cmd, plan);
    let spawn_result = subreaper::spawn_registered(&mut cmd);
    // The Command holds our copies of the pipe's write end: drop them so EOF comes when the
    // group's last writer exits.
    drop(cmd);
    let mut child = match spawn_result {
        Ok(c) => c,
        Err(source) => {
            return spawn_failed(started_at, &ExecError::Spawn { shell: spec.shell.clone(), source });
        }
    };
    let pgid = match child.id() {
        Some(id) => Pid::from_raw(id as i32),
        None => {
            // Only after the child was reaped, which nobody did yet.
            let error =
                ExecError::Spawn { shell: spec.shell.clone(), source: std::io::Error::other("child has no pid") };
            return spawn_failed(started_at, &error);
        }
    };
    let mut guard = GroupGuard { pgid, armed: true };
    // Read before anyone waits for the shell: until then even an exited shell is a zombie
    // whose stat is still there.
    let start_ticks = procfs::read_stat(pgid.as_raw()).map(|p| p.start_ticks);
    if let Some(tx) = spawned {
        let _ = tx.send(Spawned { pgid: pgid.as_raw(), start_ticks });
    }

    let capture = spec.live.clone().unwrap_or_else(|| Arc::new(LiveRun::new(spec.max_output_bytes)));
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("Cannot watch a run's output pipe; output is lost for this run. error={e}");
            None
        }
    };

    let status = {
        let read = async {
            if let Some(p) = pipe.as_mut() {
                read_all(p, &capture).await;
            }
        };
        tokio::pin!(read);
        let mut read_done = false;
        let (status, ended_by) = wait_shell(spec, &mut child, pgid, &mut kill, &mut read, &mut read_done).await;
        if ended_by.is_some() {
            // Killed or timed out: what left the group (`setsid`) goes too, found by its
            // DISTCRON_RUN_ID as after a restart; then nothing holds the pipe any more.
            let target = orphans::RunTarget { run: RunId(spec.run_id.clone()), pgid: Some(pgid.as_raw()), start_ticks };
            let found = orphans::terminate(&target, spec.kill_grace).await;
            log::debug!("Swept the processes of a run that was ended. run={} processes={found}", spec.run_id);
        }
        // ARCHITECTURE.md: a run ends when its shell exits; drain, then sweep the group.
        sweep_group(pgid, spec.kill_grace, &mut read, &mut read_done).await;
        (status, ended_by)
    };
    guard.armed = false;
    drop(pipe);
    let (status, ended_by) = status;
    // tokio has collected the shell (or given up on it): the subreaper may reap that pid now.
    subreaper::unregister(pgid.as_raw());

    let (output, output_bytes, truncated) = capture.with_capture(|c| (c.text(), c.total(), c.truncated()));
    ProcessOutcome {
        started_at,
        ended_at: Utc::now(),
        exit_code: status.as_ref().and_then(ExitStatus::code),
        signal: status.as_ref().and_then(ExitStatus::signal),
        ended_by,
        spawn_error: None,
        output,
        output_bytes,
        truncated,
        limits: spec.limits,
    }
}

/// Waits for the shell to exit, killing its group on timeout or request. Keeps the output
/// reader going meanwhile so a chatty job never blocks on a full pipe.
async fn wait_shell(
    spec: &ProcessSpec,
    child: &mut tokio::process::Child,
    pgid: Pid,
    kill: &mut oneshot::Receiver<KillReason>,
    read: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    read_done: &mut bool,
) -> (Option<ExitStatus>, Option<EndedBy>) {
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut ended_by: Option<EndedBy> = None;
    let mut kill_open = true;
    let mut sigkill_at: Option<Instant> = None;
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(s) => (Some(s), ended_by),
                    Err(e) => {
                        log::warn!("Waiting for a run's shell failed; killing its group. error={e}");
                        signal_group(pgid, Signal::SIGKILL);
                        (None, ended_by)
                    }
                };
            }
            _ = sleep_until_opt(deadline), if ended_by.is_none() => {
                ended_by = Some(EndedBy::Timeout { after: spec.timeout.unwrap_or_default() });
                signal_group(pgid, Signal::SIGTERM);
                sigkill_at = Some(Instant::now() + spec.kill_grace);
            }
            reason = &mut *kill, if kill_open && ended_by.is_none() => match reason {
                Ok(reason) => {
                    ended_by = Some(EndedBy::Killed(reason));
                    signal_group(pgid, Signal::SIGTERM);
                    sigkill_at = Some(Instant::now() + spec.kill_grace);
                }
                // Sender dropped: nobody will ask for a kill.
                Err(_) => kill_open = false,
            },
            _ = sleep_until_opt(sigkill_at) => {
                signal_group(pgid, Signal::SIGKILL);
                sigkill_at = None;
            }
            _ = &mut *read, if !*read_done => *read_done = true,
        }
    }
}

/// After the shell exited: drain the pipe for up to `grace`, then SIGTERM whatever is left in
/// the group, SIGKILL it after `grace`, and give the reader a last short chance.
async fn sweep_group(
    pgid: Pid,
    grace: Duration,
    read: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    read_done: &mut bool,
) {
    if !*read_done {
        *read_done = tokio::time::timeout(grace, &mut *read).await.is_ok();
    }
    if !group_alive(pgid) {
        return;
    }
    signal_group(pgid, Signal::SIGTERM);
    let term_deadline = Instant::now() + grace;
    loop {
        if *read_done {
            // Pipe closed: wait only for the group itself.
            while group_alive(pgid) && Instant::now() < term_deadline {
                tokio::time::sleep(GROUP_POLL).await;
            }
            break;
        }
        tokio::select! {
            _ = &mut *read => *read_done = true,
            _ = tokio::time::sleep_until(term_deadline) => break,
        }
    }
    if group_alive(pgid) {
        signal_group(pgid, Signal::SIGKILL);
    }
    if !*read_done {
        *read_done = tokio::time::timeout(AFTER_SIGKILL_WAIT, &mut *read).await.is_ok();
        if !*read_done {
            log::warn!("A process that left the run's group still holds its output pipe; output after this point is dropped. pgid={pgid}");
        }
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    fn spec(command: &str) -> ProcessSpec {
        ProcessSpec {
            shell: "/bin/bash".into(),
            command: command.into(),
            env: BTreeMap::new(),
            working_dir: None,
            timeout: None,
            kill_grace: Duration::from_secs(2),
            max_output_bytes: 64 * 1024,
            job: "backup".into(),
            // Unique: a kill sweeps every process carrying the run's id, and tests run at once.
            run_id: format!("run-{}", uuid::Uuid::now_v7().simple()),
            scheduled_at: "2024-05-01T10:00:00Z".into(),
            attempt: 2,
            fence: 42,
            limits: None,
            run_as_user: None,
            run_as_group: None,
            allowed_users: Vec::new(),
            death_signal: true,
            live: None,
        }
    }

    async fn run(spec: &ProcessSpec) -> ProcessOutcome {
        let (_tx, rx) = oneshot::channel();
        run_command(spec, rx).await
    }

    /// True while the pid exists and is not a zombie.
    fn pid_alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                // state is the field after the ")" closing the command name
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
                !matches!(state, Some(Some('Z')) | Some(Some('X')))
            }
            Err(_) => false,
        }
    }

    async fn wait_until(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
        let end = StdInstant::now() + limit;
        while StdInstant::now() < end {
            if probe() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        probe()
    }

    async fn read_pid(path: &std::path::Path) -> i32 {
        let mut pid = None;
        wait_until(Duration::from_secs(5), || {
            pid = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<i32>().ok());
            pid.is_some()
        })
        .await;
        pid.expect("command wrote its pid")
    }

    #[tokio::test]
    async fn run_gets_distcron_env_vars() {
        let mut s =
            spec("echo \"$DISTCRON_JOB|$DISTCRON_RUN_ID|$DISTCRON_SCHEDULED_AT|$DISTCRON_ATTEMPT|$DISTCRON_FENCE\"");
        s.run_id = "run-1".into();
        let out = run(&s).await;
        assert_eq!(out.output, "backup|run-1|2024-05-01T10:00:00Z|2|42\n");
        assert_eq!(classify(&out), (RunStatus::Succeeded, String::new()));
        assert_eq!(out.exit_code, Some(0));
        assert!(!out.truncated);
    }

    #[tokio::test]
    async fn working_dir_and_job_env_apply_and_stdin_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec("pwd; echo \"$GREETING $DISTCRON_JOB\"; cat; echo end");
        s.working_dir = Some(dir.path().to_path_buf());
        s.env.insert("GREETING".into(), "hello".into());
        // The job's env cannot shadow the per-run values.
        s.env.insert("DISTCRON_JOB".into(), "spoofed".into());
        let out = run(&s).await;
        let canon = dir.path().canonicalize().expect("canon");
        assert_eq!(out.output, format!("{}\nhello backup\nend\n", canon.display()));
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_classified() {
        let out = run(&spec("exit 3")).await;
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(classify(&out), (RunStatus::Failed, "exit code 3".into()));

        let out = run(&spec("kill -KILL $$")).await;
        assert_eq!(out.exit_code, None);
        assert_eq!(out.signal, Some(9));
        assert_eq!(classify(&out), (RunStatus::Failed, "killed by signal 9 (SIGKILL)".into()));
    }

    #[tokio::test]
    async fn stdout_and_stderr_keep_their_order() {
        let out = run(&spec("for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done")).await;
        assert_eq!(out.output, "out1\nerr1\nout2\nerr2\nout3\nerr3\nout4\nerr4\nout5\nerr5\n");
    }

    #[tokio::test]
    async fn huge_output_is_capped_to_head_and_tail() {
        let mut s = spec("printf 'HEAD'; head -c 52428792 /dev/zero | tr '\\0' x; printf 'TAIL'");
        s.max_output_bytes = 4096;
        let out = run(&s).await;
        assert_eq!(out.output_bytes, 52_428_800);
        assert!(out.truncated);
        let marker = format!("\n… [{} bytes truncated] …\n", 52_428_800 - 4096);
        assert!(out.output.contains(&marker), "marker missing");
        assert!(out.output.len() <= 4096 + marker.len());
        assert!(out.output.starts_with("HEADxxx"));
        assert!(out.output.ends_with("xxxTAIL"));
        assert_eq!(classify(&out).0, RunStatus::Succeeded);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("gc.pid");
        let mut s = spec(&format!("sleep 60 & echo $! > {}; sleep 60; wait", pidfile.display()));
        s.timeout = Some(Duration::from_millis(500));
        let t0 = StdInstant::now();
        let out = run(&s).await;
        let grandchild = read_pid(&pidfile).await;
        assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
        assert_eq!(out.ended_by, Some(EndedBy::Timeout { after: Duration::from_millis(500) }));
        assert_eq!(classify(&out), (RunStatus::Timeout, "timed out after 0.5s".into()));
        assert!(
            wait_until(Duration::from_secs(2), || !pid_alive(grandchild)).await,
            "grandchild {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn timeout_and_kill_also_end_what_left_the_group_with_setsid() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, by_kill) in [false, true].into_iter().enumerate() {
            let pidfile = dir.path().join(format!("escapee-{i}.pid"));
            let mut s = spec(&format!("setsid sleep 60 & echo $! > {}; sleep 60; wait", pidfile.display()));
            if !by_kill {
                s.timeout = Some(Duration::from_millis(500));
            }
            let (tx, rx) = oneshot::channel();
            let task = tokio::spawn(async move { run_command(&s, rx).await });
            let escapee = read_pid(&pidfile).await;
            assert!(pid_alive(escapee));
            if by_kill {
                tx.send(KillReason::Requested).expect("runner listening");
            }
            let out = task.await.expect("no panic");
            assert!(out.ended_by.is_some(), "{:?}", out.ended_by);
            assert!(
                wait_until(Duration::from_secs(2), || !pid_alive(escapee)).await,
                "setsid grandchild {escapee} survived the {}",
                if by_kill { "kill" } else { "timeout" }
            );
        }
    }

    #[tokio::test]
    async fn kill_request_takes_down_the_group_quickly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("gc.pid");
        let s = spec(&format!("sleep 60 & echo $! > {}; sleep 60; wait", pidfile.display()));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move { run_command(&s, rx).await });
        let grandchild = read_pid(&pidfile).await;
        assert!(pid_alive(grandchild));
        let t0 = StdInstant::now();
        tx.send(KillReason::Requested).expect("runner listening");
        let out = task.await.expect("no panic");
        assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
        assert_eq!(out.ended_by, Some(EndedBy::Killed(KillReason::Requested)));
        assert_eq!(classify(&out), (RunStatus::Killed, "killed by request".into()));
        assert!(
            wait_until(Duration::from_secs(1), || !pid_alive(grandchild)).await,
            "grandchild {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn kill_escalates_to_sigkill_when_sigterm_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let mut s = spec(&format!("trap '' TERM; echo $$ > {}; sleep 30", ready.display()));
        s.kill_grace = Duration::from_millis(700);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move { run_command(&s, rx).await });
        let shell = read_pid(&ready).await;
        let t0 = StdInstant::now();
        tx.send(KillReason::Replaced).expect("runner listening");
        let out = task.await.expect("no panic");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(650) && took < Duration::from_secs(3), "took {took:?}");
        assert_eq!(out.signal, Some(9));
        assert_eq!(classify(&out).0, RunStatus::Killed);
        assert!(!pid_alive(shell));
    }

    #[tokio::test]
    async fn dropped_kill_sender_never_kills() {
        let s = spec("sleep 0.3; echo done");
        let (tx, rx) = oneshot::channel::<KillReason>();
        drop(tx);
        let out = run_command(&s, rx).await;
        assert_eq!(out.output, "done\n");
        assert_eq!(out.ended_by, None);
    }

    #[tokio::test]
    async fn spawn_failures_are_reported() {
        let mut s = spec("true");
        s.shell = "/nonexistent/shell".into();
        let out = run(&s).await;
        let (status, err) = classify(&out);
        assert_eq!(status, RunStatus::Error);
        assert!(err.starts_with("cannot start shell /nonexistent/shell: "), "{err}");

        let mut s = spec("true");
        s.working_dir = Some("/nonexistent/dir".into());
        let out = run(&s).await;
        let (status, err) = classify(&out);
        assert_eq!(status, RunStatus::Error);
        assert!(err.starts_with("working directory /nonexistent/dir is not usable"), "{err}");
    }

    #[tokio::test]
    async fn leftover_background_process_is_terminated_when_the_shell_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("bg.pid");
        // Holds the pipe open (inherits stdout).
        let mut s = spec(&format!("sleep 100 & echo $! > {}; echo bye", pidfile.display()));
        s.kill_grace = Duration::from_millis(300);
        let t0 = StdInstant::now();
        let out = run(&s).await;
        assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
        assert_eq!(out.output, "bye\n");
        assert_eq!(classify(&out).0, RunStatus::Succeeded);
        let bg = read_pid(&pidfile).await;
        assert!(wait_until(Duration::from_secs(1), || !pid_alive(bg)).await, "leftover {bg} survived");

        // Not holding the pipe: swept as well, without waiting for the drain grace.
        let pidfile = dir.path().join("bg2.pid");
        let s = spec(&format!("sleep 100 >/dev/null 2>&1 & echo $! > {}", pidfile.display()));
        let t0 = StdInstant::now();
        let out = run(&s).await;
        assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
        assert_eq!(classify(&out).0, RunStatus::Succeeded);
        let bg = read_pid(&pidfile).await;
        assert!(wait_until(Duration::from_secs(1), || !pid_alive(bg)).await, "leftover {bg} survived");
    }

    #[tokio::test]
    async fn cpu_limit_ends_a_busy_loop_with_the_reason() {
        let mut s = spec("while :; do :; done");
        s.limits = Some(JobLimits { max_cpu_secs: Some(1), ..JobLimits::default() });
        s.timeout = Some(Duration::from_secs(30));
        let out = run(&s).await;
        let (status, err) = classify(&out);
        assert_eq!(status, RunStatus::Failed, "{err}");
        assert!(err.contains("limit: cpu limit of 1 s reached"), "{err}");
        assert_eq!(out.ended_by, None, "the limit ended it, not the timeout");
    }

    #[tokio::test]
    async fn memory_limit_fails_a_big_allocation_with_the_reason() {
        let mut s = spec("set -o pipefail; head -c 1073741824 /dev/zero | tail -c 1073741824 > /dev/null");
        s.limits = Some(JobLimits { max_memory_bytes: Some(100_000_000), ..JobLimits::default() });
        let out = run(&s).await;
        let (status, err) = classify(&out);
        assert_eq!(status, RunStatus::Failed, "{err} / {}", out.output);
        assert!(err.contains("limit: memory limit of 100000000 bytes"), "{err}");
        assert!(out.output.contains("memory exhausted") || out.output.contains("Cannot allocate"), "{}", out.output);
    }

    #[tokio::test]
    async fn open_files_and_nice_apply_to_the_shell() {
        let mut s = spec("ulimit -n; cut -d' ' -f19 /proc/$$/stat");
        s.limits = Some(JobLimits { max_open_files: Some(64), nice: Some(7), ..JobLimits::default() });
        let out = run(&s).await;
        assert_eq!(out.output, "64\n7\n");
    }

    #[tokio::test]
    async fn run_as_user_switches_account_on_root_and_is_refused_otherwise() {
        let mut s = spec("id -u; id -g; echo \"$HOME $USER $LOGNAME\"");
        s.run_as_user = Some("nobody".into());
        s.allowed_users = vec!["nobody".into()];
        let out = run(&s).await;
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody").expect("lookup").expect("nobody exists");
            assert_eq!(
                out.output,
                format!("65534\n{}\n{} nobody nobody\n", nobody.gid, nobody.dir.display()),
                "{:?}",
                classify(&out)
            );
        } else {
            let (status, err) = classify(&out);
            assert_eq!(status, RunStatus::Error);
            assert!(err.contains("does not run as root"), "{err}");
        }
        // Not on the allow list: refused before anything runs, root or not.
        s.allowed_users.clear();
        let (status, err) = classify(&run(&s).await);
        assert_eq!(status, RunStatus::Error);
        assert!(err.contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn spawn_reports_the_group_and_its_start_time() {
        let s = spec("echo $$");
        let (_kill, rx) = oneshot::channel();
        let (tx, spawned) = oneshot::channel();
        let out = run_command_reporting(&s, rx, Some(tx)).await;
        let spawned = spawned.await.expect("reported");
        assert_eq!(out.output.trim(), spawned.pgid.to_string());
        assert!(spawned.start_ticks.is_some_and(|t| t > 0));
    }

    #[test]
    fn limit_reasons_name_the_limit() {
        let cpu = JobLimits { max_cpu_secs: Some(3), ..JobLimits::default() };
        assert_eq!(limit_reason(&cpu, None, Some(24)).as_deref(), Some("limit: cpu limit of 3 s reached (SIGXCPU)"));
        assert!(limit_reason(&cpu, Some(152), None).is_some_and(|r| r.contains("cpu limit of 3 s")));
        assert!(limit_reason(&cpu, None, Some(9)).is_some_and(|r| r.contains("SIGKILL")));
        assert_eq!(limit_reason(&cpu, Some(1), None), None, "a plain failure is not blamed on the cpu limit");
        let mem = JobLimits { max_memory_bytes: Some(1 << 27), ..JobLimits::default() };
        assert!(limit_reason(&mem, Some(1), None).is_some_and(|r| r.contains("memory limit of 134217728 bytes")));
        assert_eq!(limit_reason(&mem, Some(0), None), None);
        assert_eq!(limit_reason(&JobLimits::default(), Some(1), Some(9)), None);
    }
}
