//! Every message the actors exchange, grouped by receiving actor (ARCHITECTURE.md "Actors").
//!
//! Commands are imperative, events past tense, queries `Get*`. Each doc line says
//! sender -> receiver and when.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{Fence, Job, JobLimits, JobName, Revision, RunId, RunRecord, RunStatus, Trigger};

// ---------------------------------------------------------------------------------------------
// SchedulerActor

/// WatchActor -> SchedulerActor: the full job set at `revision` (start, or after compaction).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Resynced {
    /// Every job.
    pub jobs: Vec<Job>,
    /// Snapshot revision.
    pub revision: Revision,
}

/// WatchActor -> SchedulerActor: job created or changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JobUpserted {
    /// The job as stored.
    pub job: Job,
    /// Revision of the change.
    pub revision: Revision,
}

/// WatchActor -> SchedulerActor: job deleted.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JobRemoved {
    /// Job name.
    pub name: JobName,
    /// Revision of the change.
    pub revision: Revision,
}

/// WatchActor -> SchedulerActor: an operator asked to kill a job's live runs (or one run).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct KillRequested {
    /// Job.
    pub job: JobName,
    /// Only this run, when set.
    pub run: Option<RunId>,
}

/// WatchActor -> SchedulerActor: an operator asked to run a job now.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RunRequested {
    /// Job.
    pub job: JobName,
    /// Request id (claimed once cluster-wide).
    pub request: String,
    /// Run parameters: extra environment variables for this run (empty = none).
    pub env: std::collections::BTreeMap<String, String>,
    /// Set when the request is a later attempt of a failed run (job `retry`).
    pub retry: Option<crate::domain::RetryOf>,
}

/// ExecutorActor/ExecutorPool -> SchedulerActor: a dispatched run reached a final status.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RunFinished {
    /// Run.
    pub run: RunId,
    /// Job.
    pub job: JobName,
    /// Final status.
    pub status: RunStatus,
}

/// main -> SchedulerActor: stop claiming, let runs finish for `grace`, then kill them; resolves
/// when no run is left.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// How long running jobs may take to finish before they are killed.
    pub grace: Duration,
}

/// HTTP -> SchedulerActor: what this node is doing (health, workers).
#[derive(Message, Debug)]
#[rtype(result = "SchedulerStatus")]
pub struct GetSchedulerStatus;

/// Answer to [`GetSchedulerStatus`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct SchedulerStatus {
    /// Jobs in the plan (enabled, with a future fire time).
    pub planned_jobs: usize,
    /// Runs dispatched and not finished.
    pub running: usize,
    /// Last store revision applied.
    pub revision: i64,
    /// Whether the job watch is connected and the plan current.
    pub synced: bool,
    /// Next fire time in the plan.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// True after `Shutdown`.
    pub draining: bool,
    /// Ticks due and waiting for their claim or their run, over every job (the due queue).
    pub due_ticks: usize,
}

/// WatchActor -> SchedulerActor: the watch broke; the plan is kept but may be stale.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WatchLost;

// ---------------------------------------------------------------------------------------------
// ExecutorPool and ExecutorActor

/// Everything an executor needs to run one claimed tick.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Run id.
    pub run: RunId,
    /// Version of the job definition this run runs.
    pub job_version: Option<u64>,
    /// Job.
    pub job: JobName,
    /// Command (run with `<shell> -c`).
    pub command: String,
    /// Shell binary.
    pub shell: String,
    /// Extra environment (the job's `env`).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Timeout; `None` = none.
    pub timeout: Option<Duration>,
    /// SIGTERM -> SIGKILL grace on timeout and kill.
    pub kill_grace: Duration,
    /// Output cap in bytes (head + tail kept).
    pub max_output_bytes: usize,
    /// Tick (or manual request time).
    pub scheduled_at: DateTime<Utc>,
    /// When the scheduler dispatched it.
    pub dispatched_at: DateTime<Utc>,
    /// Why.
    pub trigger: Trigger,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Claim fencing token.
    pub fence: Fence,
    /// How the shell is launched: limits, account, death signal.
    pub launch: RunLaunch,
    /// When a jittered tick fired (`scheduled_at` + the job's offset); `None` without jitter.
    pub fire_at: Option<DateTime<Utc>>,
    /// Run parameters (already merged into `env`), recorded on the run.
    pub params: std::collections::BTreeMap<String, String>,
}

/// How a run's shell is launched: the job's part (limits, account) and the node's (which
/// accounts are allowed, whether the shell dies with distcron).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLaunch {
    /// The job's resource limits.
    pub limits: Option<JobLimits>,
    /// The job's `run_as_user`.
    pub run_as_user: Option<String>,
    /// The job's `run_as_group`.
    pub run_as_group: Option<String>,
    /// `executor.allowed_users` of this node.
    pub allowed_users: Vec<String>,
    /// SIGTERM to the shell when distcron dies (`executor.on_restart = "terminate"`).
    pub death_signal: bool,
}

/// SchedulerActor -> ExecutorPool: start this claimed tick (queued when every executor is busy;
/// recorded as `skipped` with reason "saturated" when the queue is full).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StartRun(pub RunSpec);

/// Why a run is being killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    /// Operator request (API/UI/seed `/job/kill`).
    Requested,
    /// `replace` concurrency policy: a newer tick replaces it.
    Replaced,
    /// Node shutdown grace ran out.
    Shutdown,
    /// The worker lost its membership session (`on_session_loss = "kill"`).
    SessionLost,
}

impl KillReason {
    /// Text for the run's `err` field.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Requested => "killed by request",
            Self::Replaced => "killed: replaced by a newer run (concurrency policy replace)",
            Self::Shutdown => "killed: node shut down and the shutdown grace ran out",
            Self::SessionLost => "killed: the worker lost its etcd session (on_session_loss = kill)",
        }
    }
}

/// SchedulerActor -> ExecutorPool -> ExecutorActor: kill this run's process group
/// (SIGTERM, SIGKILL after the grace); a queued run is dropped from the queue and recorded.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct KillRun {
    /// Run.
    pub run: RunId,
    /// Why.
    pub reason: KillReason,
}

/// ExecutorPool -> ExecutorActor: run this (the executor is idle).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Execute(pub RunSpec);

/// ExecutorActor -> ExecutorPool: executor `index` is idle again (finished, or restarted).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ExecutorIdle {
    /// Executor index in the pool.
    pub index: usize,
}

/// HTTP/main -> ExecutorPool: queue and executor occupancy.
#[derive(Message, Debug)]
#[rtype(result = "PoolStatus")]
pub struct GetPoolStatus;

/// Answer to [`GetPoolStatus`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct PoolStatus {
    /// Executors.
    pub size: usize,
    /// Executors running a run.
    pub busy: usize,
    /// Runs waiting.
    pub queued: usize,
    /// Queue bound.
    pub queue_capacity: usize,
    /// Executors restarted after a crash since start.
    pub restarts: u64,
}

/// ExecutorActor -> ExecutorPool: executor `index` crashed, was restarted by its Supervisor and
/// is idle again (its run was recorded as `error`); the pool counts it in `restarts`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ExecutorRestarted {
    /// Executor index in the pool.
    pub index: usize,
}

// ---------------------------------------------------------------------------------------------
// LogBatchActor

/// ExecutorActor/SchedulerActor/ExecutorPool -> LogBatchActor: store this record (upsert by id).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RecordRun(pub RunRecord);

/// main -> LogBatchActor: write everything buffered now; resolves when written or spooled.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FlushLogs;

/// HTTP -> LogBatchActor: log pipeline state for readiness.
#[derive(Message, Debug)]
#[rtype(result = "LogStatus")]
pub struct GetLogStatus;

/// Answer to [`GetLogStatus`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct LogStatus {
    /// Records buffered, not yet written.
    pub buffered: usize,
    /// Bytes in the spool file (records waiting for the store).
    pub spool_bytes: u64,
    /// Records in the spool file.
    pub spool_records: u64,
    /// Whether the last write to the store succeeded.
    pub store_ok: bool,
    /// Last store error, if the store is failing.
    pub last_error: Option<String>,
    /// Records written since start.
    pub written: u64,
    /// Records in the dead-letter file (refused by the store for good).
    pub dead_lettered: u64,
    /// Bytes of the buffered records (bounded by `log_batch.max_buffered_bytes`).
    pub buffered_bytes: u64,
}

/// node start (orphans) -> SchedulerActor: a run the previous life of this node left running is
/// still alive and adopted (`executor.on_restart = "adopt"`): it counts as live for `forbid` and
/// holds a running mark until its [`RunFinished`] comes.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RunAdopted {
    /// Run.
    pub run: RunId,
    /// Job.
    pub job: JobName,
    /// Its tick.
    pub scheduled_at: DateTime<Utc>,
    /// When it started.
    pub since: DateTime<Utc>,
    /// Its claim's fence.
    pub fence: crate::domain::Fence,
    /// Why it ran.
    pub trigger: crate::domain::Trigger,
}

/// node start (orphans) -> ExecutorPool: a [`KillRun`] for this adopted run goes down `kill`
/// (its watcher then terminates the run's processes).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AdoptedKillable {
    /// Run.
    pub run: RunId,
    /// Where its kill goes.
    pub kill: tokio::sync::oneshot::Sender<KillReason>,
}

// ---------------------------------------------------------------------------------------------
// WatchActor

/// HTTP -> WatchActor: the stored job documents that are not valid jobs (issue 9, item 8), for
/// readiness.
#[derive(Message, Debug)]
#[rtype(result = "Vec<crate::domain::InvalidJob>")]
pub struct GetInvalidJobs;
