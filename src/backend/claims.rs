//! The claims port: who runs a given (job, tick), and which runs are alive anywhere.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BackendError;
use crate::domain::{Fence, JobName, RunId, WorkerId};

/// A live run, visible cluster-wide (`/cron/running/<name>/<run id>` in etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningMark {
    /// Job.
    pub job: JobName,
    /// Run.
    pub run: RunId,
    /// Worker running it.
    pub worker: WorkerId,
    /// Tick (or manual request time).
    pub scheduled_at: DateTime<Utc>,
    /// When the mark was set.
    pub since: DateTime<Utc>,
}

/// Tick claims and running marks.
#[async_trait]
pub trait Claims: Send + Sync + 'static {
    /// Claims `tick` of `job`: succeeds (returning the fencing token) only when no tick at or
    /// after `tick` was claimed before. Whatever the callers' clocks, a tick is claimed once.
    ///
    /// # Errors
    /// `Unavailable`: nothing was claimed (the caller must not run the tick).
    async fn claim_tick(&self, job: &JobName, tick: DateTime<Utc>) -> Result<Option<Fence>, BackendError>;

    /// Claims a run-now request: succeeds once per `request` id.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn claim_request(&self, job: &JobName, request: &str) -> Result<Option<Fence>, BackendError>;

    /// Publishes a live run.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn mark_running(&self, mark: &RunningMark) -> Result<(), BackendError>;

    /// Removes a live run's mark (no error when absent).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn clear_running(&self, job: &JobName, run: &RunId) -> Result<(), BackendError>;

    /// Live runs of `job` (of every job when `None`), anywhere.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn running(&self, job: Option<&JobName>) -> Result<Vec<RunningMark>, BackendError>;
}
