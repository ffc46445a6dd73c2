//! The log store port: run records, written in idempotent batches and queried by the API, and
//! the pieces every adapter shares (retention policy, stats arithmetic).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BackendError;
use crate::domain::{JobName, RunId, RunRecord, RunStatus, WorkerId};

/// Which runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only this job.
    pub job: Option<JobName>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only this worker.
    pub worker: Option<WorkerId>,
    /// Start time (see [`RunRecord::start_time`]) at or after.
    pub from: Option<DateTime<Utc>>,
    /// Start time before.
    pub to: Option<DateTime<Utc>>,
}

/// Position after the last run of a page: runs are ordered by (start time, id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    /// Start time of the last run returned.
    pub start_time: DateTime<Utc>,
    /// Id of the last run returned.
    pub id: RunId,
}

impl RunCursor {
    /// Opaque text form for URLs: `<ms since epoch>_<run id>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.start_time.timestamp_millis(), self.id)
    }

    /// Parses [`RunCursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        let start_time = DateTime::from_timestamp_millis(ms.parse().ok()?)?;
        if id.is_empty() {
            return None;
        }
        Some(Self { start_time, id: RunId(id.to_owned()) })
    }
}

/// A page request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunQuery {
    /// Which runs.
    pub filter: RunFilter,
    /// Continue after this cursor (newest first); stable while new runs arrive.
    pub after: Option<RunCursor>,
    /// Skip this many (the seed's `skip`; prefer `after`).
    pub skip: u64,
    /// At most this many.
    pub limit: u32,
}

/// A page of runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunPage {
    /// Runs, newest start time first.
    pub runs: Vec<RunRecord>,
    /// Cursor for the next page, when there may be one.
    pub next_cursor: Option<String>,
}

/// Per-job figures over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobStats {
    /// Runs with a final status in the window.
    pub runs: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Of which failed, timed out, errored, were killed or lost.
    pub failed: u64,
    /// Median duration of runs that started, ms.
    pub p50_ms: Option<u64>,
    /// 95th percentile duration, ms.
    pub p95_ms: Option<u64>,
    /// Start time of the last succeeded run.
    pub last_success: Option<DateTime<Utc>>,
    /// Start time of the last failed run.
    pub last_failure: Option<DateTime<Utc>>,
}

/// How long run records are kept: a global default and per-job overrides (days; 0 = forever).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days for jobs without an override (`log_batch.retention_days`); 0 = forever.
    pub default_days: u32,
    /// Jobs with their own `retention_days`.
    pub per_job: BTreeMap<JobName, u32>,
}

impl RetentionPolicy {
    /// Days kept for `job`'s runs (0 = forever).
    pub fn days_for(&self, job: &JobName) -> u32 {
        self.per_job.get(job).copied().unwrap_or(self.default_days)
    }

    /// The start time before which `job`'s runs are deleted at `now`, if any are.
    pub fn cutoff_for(&self, job: &JobName, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        days_cutoff(self.days_for(job), now)
    }

    /// The cutoff of jobs without an override.
    pub fn default_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        days_cutoff(self.default_days, now)
    }

    /// Overridden jobs whose runs do expire, with their cutoff at `now`.
    pub fn job_cutoffs(&self, now: DateTime<Utc>) -> impl Iterator<Item = (&JobName, DateTime<Utc>)> + '_ {
        self.per_job.iter().filter_map(move |(job, days)| days_cutoff(*days, now).map(|c| (job, c)))
    }
}

fn days_cutoff(days: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (days > 0).then(|| now - chrono::Duration::days(i64::from(days)))
}

/// True for the final statuses counted as failures in [`JobStats`].
pub(crate) fn is_failure(status: RunStatus) -> bool {
    matches!(status, RunStatus::Failed | RunStatus::Timeout | RunStatus::Error | RunStatus::Killed | RunStatus::Lost)
}

/// Nearest-rank percentile of ascending `sorted` values.
pub(crate) fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Accumulates [`JobStats`] from final runs, one at a time (adapters that cannot compute
/// percentiles in the store feed it their rows).
#[derive(Debug, Default)]
pub(crate) struct StatsBuilder {
    stats: JobStats,
    durations: Vec<u64>,
}

impl StatsBuilder {
    /// Counts one run with a final status.
    pub(crate) fn add(&mut self, status: RunStatus, start: DateTime<Utc>, duration_ms: Option<u64>) {
        if !status.is_final() {
            return;
        }
        self.stats.runs += 1;
        if status == RunStatus::Succeeded {
            self.stats.succeeded += 1;
            self.stats.last_success = self.stats.last_success.max(Some(start));
        } else if is_failure(status) {
            self.stats.failed += 1;
            self.stats.last_failure = self.stats.last_failure.max(Some(start));
        }
        if let Some(ms) = duration_ms {
            self.durations.push(ms);
        }
    }

    /// The figures.
    pub(crate) fn finish(mut self) -> JobStats {
        self.durations.sort_unstable();
        self.stats.p50_ms = percentile(&self.durations, 50);
        self.stats.p95_ms = percentile(&self.durations, 95);
        self.stats
    }
}

/// Run records.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Writes records with one call, upserting by run id: a record whose id is stored replaces
    /// it (a `running` record becomes final), so a retried batch never duplicates a run.
    /// Records are applied in slice order.
    ///
    /// # Errors
    /// `Unavailable` (or `Sqlite`/`Io`): nothing or part was written; retrying the whole batch is safe.
    async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError>;

    /// One run.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>, BackendError>;

    /// A page of runs, newest start time first.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn query(&self, query: &RunQuery) -> Result<RunPage, BackendError>;

    /// How many runs match.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn count(&self, filter: &RunFilter) -> Result<u64, BackendError>;

    /// Figures for one job over runs started at or after `since`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn stats(&self, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError>;

    /// Deletes runs that started before `before`; returns how many.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError>;

    /// Applies `policy` at `now`: deletes each job's runs that started more than its retention
    /// days before `now` (runs of jobs without an override, including deleted jobs and runs the
    /// seed wrote, follow `default_days`; 0 = keep). Stores that expire records themselves (a
    /// MongoDB TTL index) also use `policy` for the records they write from now on. Returns
    /// how many runs were deleted.
    ///
    /// The default honours only `default_days`; an adapter must override it to honour per-job
    /// overrides (the conformance suite checks that it does).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn apply_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<u64, BackendError> {
        match policy.default_cutoff(now) {
            Some(before) => self.purge_before(before).await,
            None => Ok(0),
        }
    }

    /// Cheap reachability check for readiness.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn ping(&self) -> Result<(), BackendError>;
}
