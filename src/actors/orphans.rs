//! What a restarted node does with the processes its previous life left running.
//!
//! Owns: finding the processes of a run that this node left `running` (crash, SIGKILL, OOM
//! kill of distcron), and either terminating them (`executor.on_restart = "terminate"`, the
//! default: SIGTERM, SIGKILL after `kill_grace_ms`, run recorded `lost` with the reason
//! "distcron restarted; leftover processes terminated") or adopting them (`"adopt"`: the run
//! stays live for `forbid` and is recorded `lost` with its real end time once its last process
//! is gone, watched by polling `/proc`; a kill through the pool terminates it, recorded `killed`).
//! Leaves to others: which runs were left `running` (`log_batch::interrupted_runs`), the
//! scheduler's live-run table ([`RunAdopted`], [`RunFinished`]) and writing records.
//! [`terminate`] is also how a killed or timed-out run's processes that left its group
//! (`setsid`) are ended (`process::run_command`).
//!
//! Which processes are the run's — a process is one of them when it is alive, started no
//! earlier than the run's shell, and
//! - its environment holds `DISTCRON_RUN_ID=<run id>` (every process of a run inherits it, also
//!   one that left the process group with `setsid`; readable by root and by the same user), or
//! - it is in the run's process group while the group leader is the very shell of the run
//!   (same pid *and* start time, `/proc/<pid>/stat` field 22), or the leader is gone and the
//!   environment cannot be read (a process group id cannot be reused while a member lives).
//!
//! A pid is never taken for the run's on its number alone, so a reused pid is never signalled.

use std::time::Duration;

use actix::Recipient;
use chrono::Utc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::messages::{KillReason, RecordRun, RunFinished};
use super::procfs::{self, ProcStat};
use crate::config::RestartPolicy;
use crate::domain::{RunId, RunRecord, RunStatus};

/// The reason recorded for a run whose leftovers were terminated at restart.
pub const TERMINATED_REASON: &str = "lost: distcron restarted; leftover processes terminated";
/// How often an adopted run's processes are looked for.
const ADOPT_POLL: Duration = Duration::from_millis(500);
/// How often termination checks whether the processes are gone.
const TERM_POLL: Duration = Duration::from_millis(50);
/// How long to wait for SIGKILLed processes to vanish.
const AFTER_SIGKILL: Duration = Duration::from_secs(1);

/// What identifies one run's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTarget {
    /// The run (its `DISTCRON_RUN_ID`).
    pub run: RunId,
    /// Its shell's pid = process group, when recorded.
    pub pgid: Option<i32>,
    /// Its shell's start time in clock ticks, when recorded.
    pub start_ticks: Option<u64>,
}

impl RunTarget {
    /// The target of a `running` record.
    pub fn of(record: &RunRecord) -> Self {
        Self { run: record.id.clone(), pgid: record.pgid, start_ticks: record.proc_start_ticks }
    }
}

/// The pids among `procs` that belong to `target` (see the module docs); `env_has(pid)` says
/// whether a process's environment holds the run's id (`None` = unreadable); `me` is skipped.
pub fn select(target: &RunTarget, procs: &[ProcStat], me: i32, env_has: impl Fn(i32) -> Option<bool>) -> Vec<i32> {
    let leader = target.pgid.and_then(|g| procs.iter().find(|p| p.pid == g && p.is_live()));
    let leader_is_ours = match (leader, target.start_ticks) {
        (Some(l), Some(start)) => l.start_ticks == start,
        _ => false,
    };
    procs
        .iter()
        .filter(|p| p.is_live() && p.pid != me)
        .filter(|p| target.start_ticks.is_none_or(|start| p.start_ticks >= start))
        .filter(|p| {
            let in_group = target.pgid == Some(p.pgrp);
            // The cheap test first: only read environments when the group does not decide.
            if in_group && leader_is_ours {
                return true;
            }
            match env_has(p.pid) {
                Some(has) => has,
                None => in_group && leader.is_none() && target.start_ticks.is_some(),
            }
        })
        .map(|p| p.pid)
        .collect()
}

/// The live processes of `target` on this host, per `/proc`.
pub fn find(target: &RunTarget) -> Vec<i32> {
    let me = nix::unistd::getpid().as_raw();
    let run = target.run.0.clone();
    select(target, &procfs::all_processes(), me, |pid| procfs::process_env_has(pid, "DISTCRON_RUN_ID", &run))
}

async fn find_async(target: &RunTarget) -> Vec<i32> {
    let t = target.clone();
    tokio::task::spawn_blocking(move || find(&t)).await.unwrap_or_default()
}

fn signal_all(pids: &[i32], sig: Signal) {
    for pid in pids {
        // Gone meanwhile is fine.
        let _ = kill(Pid::from_raw(*pid), sig);
    }
}

/// Terminates `target`'s processes: SIGTERM, then SIGKILL to what is left after `grace`.
/// Returns how many processes were found.
pub async fn terminate(target: &RunTarget, grace: Duration) -> usize {
    let found = find_async(target).await;
    if found.is_empty() {
        return 0;
    }
    signal_all(&found, Signal::SIGTERM);
    let term_deadline = tokio::time::Instant::now() + grace;
    let mut left = find_async(target).await;
    while !left.is_empty() && tokio::time::Instant::now() < term_deadline {
        // Processes started meanwhile (a loop forking) get the same treatment.
        signal_all(&left, Signal::SIGTERM);
        tokio::time::sleep(TERM_POLL).await;
        left = find_async(target).await;
    }
    let kill_deadline = tokio::time::Instant::now() + AFTER_SIGKILL;
    while !left.is_empty() {
        signal_all(&left, Signal::SIGKILL);
        if tokio::time::Instant::now() >= kill_deadline {
            log::error!(
                "Processes of an interrupted run survive SIGKILL (uninterruptible sleep?). run={} pids={left:?}",
                target.run
            );
            break;
        }
        tokio::time::sleep(TERM_POLL).await;
        left = find_async(target).await;
    }
    found.len()
}

/// The runs of a previous life, sorted out at start: records to write now, and runs adopted.
#[derive(Debug, Default)]
pub struct Settled {
    /// `lost` records to write now.
    pub lost: Vec<RunRecord>,
    /// Runs whose processes live on (`on_restart = "adopt"`): their `lost` records, to be
    /// completed with the real end time.
    pub adopted: Vec<RunRecord>,
}

/// Applies `policy` to the runs left `running` (already turned into `lost` records by
/// `interrupted_runs`): terminates or adopts those whose processes still live.
pub async fn settle(lost: Vec<RunRecord>, policy: RestartPolicy, grace: Duration) -> Settled {
    let mut out = Settled::default();
    for mut record in lost {
        let target = RunTarget::of(&record);
        match policy {
            RestartPolicy::Terminate => {
                let n = terminate(&target, grace).await;
                if n > 0 {
                    log::warn!(
                        "Processes of a run interrupted by the last stop terminated. job={} run={} processes={n}",
                        record.job,
                        record.id
                    );
                    record.err = TERMINATED_REASON.to_owned();
                    let now = Utc::now();
                    record.ended_at = Some(now);
                    record.duration_ms =
                        record.started_at.map(|s| u64::try_from((now - s).num_milliseconds()).unwrap_or(0));
                }
                out.lost.push(record);
            }
            RestartPolicy::Adopt => {
                let alive = find_async(&target).await;
                if alive.is_empty() {
                    out.lost.push(record);
                } else {
                    log::warn!(
                        "A run interrupted by the last stop is still alive; adopted until it exits. job={} run={} processes={}",
                        record.job,
                        record.id,
                        alive.len()
                    );
                    out.adopted.push(record);
                }
            }
        }
    }
    out
}

/// Watches an adopted run until its last process is gone, then records it `lost` with that
/// end time and tells the scheduler it finished. A reason on `kill` terminates its processes
/// (SIGTERM, SIGKILL after `grace`) and records it `killed`.
pub async fn watch_adopted(
    mut record: RunRecord,
    mut kill: tokio::sync::oneshot::Receiver<KillReason>,
    grace: Duration,
    log: Recipient<RecordRun>,
    scheduler: Recipient<RunFinished>,
) {
    let target = RunTarget::of(&record);
    let mut killed: Option<KillReason> = None;
    // False once a kill came or nobody can send one any more (the pool is gone).
    let mut kill_open = true;
    while !find_async(&target).await.is_empty() {
        tokio::select! {
            reason = &mut kill, if kill_open => {
                kill_open = false;
                if let Ok(reason) = reason {
                    terminate(&target, grace).await;
                    killed = Some(reason);
                }
            }
            _ = tokio::time::sleep(ADOPT_POLL) => {}
        }
    }
    let ended = Utc::now();
    record.ended_at = Some(ended);
    record.duration_ms = record.started_at.map(|s| u64::try_from((ended - s).num_milliseconds()).unwrap_or(0));
    let at = ended.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match killed {
        Some(reason) => {
            record.status = RunStatus::Killed;
            record.err = format!("{} (an adopted run: its processes were terminated at {at})", reason.describe());
        }
        None => {
            record.status = RunStatus::Lost;
            record.err = format!(
                "lost: distcron restarted while the run was in progress; its processes were adopted and ended at {at} (exit status unknown)"
            );
        }
    }
    log::info!("Adopted run ended. job={} run={}", record.job, record.id);
    let finished = RunFinished { run: record.id.clone(), job: record.job.clone(), status: record.status };
    log.do_send(RecordRun(record));
    scheduler.do_send(finished);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, pgrp: i32, start: u64) -> ProcStat {
        ProcStat { pid, state: 'S', ppid: 1, pgrp, session: pgrp, start_ticks: start }
    }

    fn target(pgid: Option<i32>, start: Option<u64>) -> RunTarget {
        RunTarget { run: RunId("r1".into()), pgid, start_ticks: start }
    }

    #[test]
    fn group_members_count_when_the_leader_is_the_runs_shell() {
        let procs = [p(100, 100, 500), p(101, 100, 510), p(200, 200, 400), p(7, 7, 1)];
        let got = select(&target(Some(100), Some(500)), &procs, 7, |_| Some(false));
        assert_eq!(got, vec![100, 101]);
    }

    #[test]
    fn a_reused_pid_is_never_taken_for_the_run() {
        // pid 100 leads a group again, but started at another time: not ours.
        let procs = [p(100, 100, 900), p(101, 100, 910)];
        assert!(select(&target(Some(100), Some(500)), &procs, 1, |_| Some(false)).is_empty());
    }

    #[test]
    fn setsid_escapees_are_found_by_their_marker_and_old_processes_never() {
        let procs = [p(100, 100, 500), p(150, 150, 520), p(160, 160, 520), p(90, 90, 100)];
        let env = |pid| Some(pid == 150 || pid == 90);
        let got = select(&target(Some(100), Some(500)), &procs, 1, env);
        assert_eq!(got, vec![100, 150], "the escapee yes; a process older than the run never");
    }

    #[test]
    fn leader_gone_group_counts_only_when_the_marker_cannot_be_read() {
        let procs = [p(101, 100, 510), p(102, 100, 520)];
        let env = |pid| if pid == 101 { None } else { Some(false) };
        assert_eq!(select(&target(Some(100), Some(500)), &procs, 1, env), vec![101]);
        // Without a recorded group, only the marker decides.
        assert_eq!(select(&target(None, None), &procs, 1, |pid| Some(pid == 102)), vec![102]);
        let mut zombie = p(103, 103, 600);
        zombie.state = 'Z';
        assert!(select(&target(None, None), &[zombie], 1, |_| Some(true)).is_empty(), "zombies are gone already");
    }

    #[tokio::test]
    async fn terminate_takes_down_a_group_and_its_setsid_escapee() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pids = dir.path().join("pids");
        let script = format!("trap '' TERM; sleep 60 & setsid sleep 61 & echo \"$$ $!\" > {}; wait", pids.display());
        let mut cmd = tokio::process::Command::new("/bin/bash");
        cmd.arg("-c").arg(&script).env("DISTCRON_RUN_ID", "run-terminate-test").process_group(0);
        let mut child = cmd.spawn().expect("spawn");
        let shell = child.id().expect("pid") as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&pids).map_or(true, |s| !s.ends_with('\n')) {
            assert!(std::time::Instant::now() < deadline, "script did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let start = procfs::read_stat(shell).expect("shell stat").start_ticks;
        let target = RunTarget { run: RunId("run-terminate-test".into()), pgid: Some(shell), start_ticks: Some(start) };
        assert!(find(&target).len() >= 3, "shell, sleep and the setsid sleep: {:?}", find(&target));
        let n = terminate(&target, Duration::from_millis(300)).await;
        assert!(n >= 3);
        let _ = child.wait().await;
        assert!(find(&target).is_empty(), "nothing of the run is left");
    }
}
