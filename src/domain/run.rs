//! Runs: one execution (or a decision not to execute) of a job for one tick.
//!
//! A run's record is keyed by its [`RunId`]; the `running` record written at start and the final
//! record written at the end are the same record (stores upsert by id), so a retried write never
//! duplicates a run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::job::JobName;
use super::worker::WorkerId;

/// Unique, time-ordered run id (UUIDv7 text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct RunId(pub String);

impl RunId {
    /// A fresh id; ids generated later sort later.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fencing token of a claim (the store revision of the winning claim write).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = i64)]
pub struct Fence(pub i64);

/// Where a run is in its life, or why it never ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started, not finished.
    Running,
    /// Exit code 0.
    Succeeded,
    /// Nonzero exit code, or ended by a signal nobody asked for.
    Failed,
    /// Exceeded the job's timeout and was killed.
    Timeout,
    /// Killed on request (API, `replace` policy, shutdown).
    Killed,
    /// Could not be started (spawn failure) or its executor crashed.
    Error,
    /// Its worker died or lost its session while it ran; the outcome is unknown.
    Lost,
    /// Not started: concurrency policy or a saturated executor pool (see `err`).
    Skipped,
    /// The tick passed while nothing could run it (node down, store outage, scheduler late).
    Missed,
    /// A pending retry overtaken by the job's next tick (policy `forbid`): not run.
    Superseded,
}

impl RunStatus {
    /// Every status, for validation and docs.
    pub const ALL: [RunStatus; 10] = [
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Timeout,
        Self::Killed,
        Self::Error,
        Self::Lost,
        Self::Skipped,
        Self::Missed,
        Self::Superseded,
    ];

    /// Lowercase name as used in JSON and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Killed => "killed",
            Self::Error => "error",
            Self::Lost => "lost",
            Self::Skipped => "skipped",
            Self::Missed => "missed",
            Self::Superseded => "superseded",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True once the run can no longer change.
    pub fn is_final(self) -> bool {
        self != Self::Running
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A cron tick.
    Schedule,
    /// Run now, from the API or UI.
    Manual,
    /// A later attempt of a tick (or run-now) whose earlier attempt failed (job `retry`).
    Retry,
    /// A tick missed while no worker ran the job, run late per its `catchup` policy.
    #[serde(rename = "catchup")]
    CatchUp,
    /// A past tick run on request (`POST /api/v1/jobs/{name}/backfill`).
    Backfill,
}

impl Trigger {
    /// The wire name (`schedule`, `manual`, `retry`, `catchup`, `backfill`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Retry => "retry",
            Self::CatchUp => "catchup",
            Self::Backfill => "backfill",
        }
    }

    /// Parses a lowercase name; anything else (the seed wrote none) is `schedule`.
    pub fn parse_or_schedule(s: &str) -> Self {
        match s {
            "manual" => Self::Manual,
            "retry" => Self::Retry,
            "catchup" => Self::CatchUp,
            "backfill" => Self::Backfill,
            _ => Self::Schedule,
        }
    }
}

/// One run's record, as stored in the log store and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// Unique run id; the log store key.
    pub id: RunId,
    /// Job name.
    pub job: JobName,
    /// The command as it was when the run started.
    pub command: String,
    /// Current status.
    pub status: RunStatus,
    /// Why it ran.
    pub trigger: Trigger,
    /// The tick this run is for (the seed's `planTime`); for manual runs, the request time.
    pub scheduled_at: DateTime<Utc>,
    /// When the scheduler dispatched it (the seed's `scheduleTime`).
    pub dispatched_at: DateTime<Utc>,
    /// When the process started.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (any final status).
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Wall time from start to end, in ms.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Process exit code, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Signal that ended the process, when one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Error text ("" on success): spawn failure, skip reason, "killed by request", ...
    #[serde(default)]
    pub err: String,
    /// Combined stdout+stderr: head and tail when truncated.
    #[serde(default)]
    pub output: String,
    /// Total bytes the command printed.
    #[serde(default)]
    pub output_bytes: u64,
    /// True when `output` holds only head and tail.
    #[serde(default)]
    pub output_truncated: bool,
    /// Worker that ran (or decided) it.
    pub worker: WorkerId,
    /// Attempt number, from 1.
    #[serde(default = "one")]
    pub attempt: u32,
    /// Fencing token of the claim.
    #[serde(default)]
    pub fence: Fence,
    /// The version of the job definition this run ran (none: recorded before versions were kept).
    #[serde(default)]
    pub job_version: Option<u64>,
    /// Process group of the run's shell (its pid), once it was spawned: with
    /// [`proc_start_ticks`](Self::proc_start_ticks) it lets a restarted node find what the run
    /// left behind without ever mistaking a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<i32>,
    /// Start time of the run's shell in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start_ticks: Option<u64>,
    /// When the tick actually fired: `scheduled_at` plus the job's jitter offset (`jitter_secs`);
    /// `None` for runs without jitter and for manual runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_at: Option<DateTime<Utc>>,
    /// Run parameters (`POST /api/v1/jobs/{name}/run {"env": {...}}`), passed to the command as
    /// environment variables on top of the job's `env`; carried by every retry of that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<std::collections::BTreeMap<String, String>>,
}

fn one() -> u32 {
    1
}

impl RunRecord {
    /// The time runs are ordered and filtered by: when the process started, or, for a run that
    /// never started, when it was dispatched (the seed's `startTime`).
    pub fn start_time(&self) -> DateTime<Utc> {
        self.started_at.unwrap_or(self.dispatched_at)
    }

    /// The same record, noting the job version it was decided for.
    #[must_use]
    pub fn with_job_version(mut self, version: u64) -> Self {
        self.job_version = Some(version);
        self
    }

    /// A record for a run that never started (skipped, missed, error before spawn).
    #[allow(clippy::too_many_arguments)]
    pub fn not_run(
        job: JobName,
        command: String,
        status: RunStatus,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
        worker: WorkerId,
        fence: Fence,
        err: String,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: RunId::generate(),
            job,
            command,
            status,
            trigger,
            scheduled_at,
            dispatched_at: now,
            started_at: None,
            ended_at: Some(now),
            duration_ms: None,
            exit_code: None,
            signal: None,
            err,
            output: String::new(),
            output_bytes: 0,
            output_truncated: false,
            worker,
            job_version: None,
            attempt: 1,
            fence,
            pgid: None,
            proc_start_ticks: None,
            fire_at: None,
            params: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for st in RunStatus::ALL {
            assert_eq!(RunStatus::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_value(st).expect("ser"), st.as_str());
        }
        assert_eq!(RunStatus::parse("nope"), None);
    }

    #[test]
    fn run_ids_sort_by_creation() {
        let a = RunId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RunId::generate();
        assert!(a < b);
    }
}
