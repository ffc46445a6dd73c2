//! The log store port: run records, written in idempotent batches and queried by the API.

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

    /// Cheap reachability check for readiness.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn ping(&self) -> Result<(), BackendError>;
}
