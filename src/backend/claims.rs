//! The claims port: who runs a given (job, tick), and which runs are alive anywhere.
//!
//! Owns: the contract of a tick claim and of running marks. A claimed tick that is to run
//! carries its run's mark ([`TickRequest::mark`]), chosen before the claim and written in the
//! same store transaction as the claim, on the worker's session: a worker that dies right after
//! its claim leaves a mark whose session expiry makes the lost-run recorder record the tick
//! `lost` (every claimed tick ends in one run, or one `lost`/`missed`/`skipped` record).
//! Leaves to others: the store (adapters in `etcd/` and `embedded/`), the policy decision
//! (the scheduler), recording lost runs (`actors/reaper.rs`).
//!
//! Alerts are claimed here too (issue 11, item 3): an alert's record is created once per
//! (job, alert id) cluster-wide ([`Claims::claim_alert`], etcd: a txn on
//! `<prefix>alerts/<job>/<id>` that puts only when the key is absent), and its owner records
//! each delivery attempt with a compare-and-set on the record's revision
//! ([`Claims::update_alert`]), so a node taking over an abandoned delivery and the old owner
//! never both write.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::BackendError;
use crate::domain::{AlertRecord, Fence, JobName, RunId, Trigger, WorkerId};

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
    /// Fencing token of the run's claim. A mark written with its claim does not hold it in its
    /// value (the fence is the revision of that very write): adapters fill it when they read
    /// the mark back (etcd: the mark key's create revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// Why the run happens (absent in marks of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

/// A won tick claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickClaim {
    /// Fencing token of the claim.
    pub fence: Fence,
    /// The tick of the job claimed before this one, when the store says (etcd does; the
    /// embedded adapter leaves it `None`).
    pub previous: Option<DateTime<Utc>>,
    /// The job's live runs anywhere at the claim (before this claim's own mark), when they were
    /// asked for.
    pub running: Vec<RunningMark>,
    /// The request's [`TickRequest::mark`] was written with the claim (false without a mark, or
    /// when `mark_if_idle` found a live run of the job).
    pub marked: bool,
}

/// One tick to claim in a batch ([`Claims::claim_ticks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickRequest {
    /// Job.
    pub job: JobName,
    /// Tick.
    pub tick: DateTime<Utc>,
    /// Return the job's live runs with a won claim.
    pub with_running: bool,
    /// The mark of the run this tick becomes, written (on the worker's session) in the same
    /// transaction as a won claim, so no claimed tick is ever without a trace. Its `fence` is
    /// ignored (the claim's fence is the mark's). A retried claim with the same mark whose
    /// earlier attempt was committed (its answer lost) answers as won, with that claim's fence.
    pub mark: Option<RunningMark>,
    /// Write `mark` only when the job has no live run anywhere (policy `forbid`: a tick that
    /// will be skipped leaves no mark). Implies `with_running`.
    pub mark_if_idle: bool,
}

impl TickRequest {
    /// A claim of `tick` that writes no mark.
    pub fn unmarked(job: JobName, tick: DateTime<Utc>, with_running: bool) -> Self {
        Self { job, tick, with_running, mark: None, mark_if_idle: false }
    }
}

/// An alert record with the store revision it was read or written at: the token of
/// [`Claims::update_alert`]'s compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    /// The record.
    pub record: AlertRecord,
    /// Its revision (etcd: the key's mod revision; embedded: a per-record counter).
    pub revision: i64,
}

/// The error of an adapter that does not keep alert records.
pub fn alerts_unsupported(backend: &'static str) -> BackendError {
    BackendError::Unavailable { backend, message: "this claims adapter keeps no alert records".into() }
}

/// Runs whose worker vanished while they ran (its session expired), each yielded once per
/// observer; the stream does not end on its own.
pub type LostStream = BoxStream<'static, RunningMark>;

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

    /// Claims attempt `attempt` (from 2) of `tick` of `job` (job `retry`): succeeds once per
    /// (job, tick, attempt) cluster-wide, whoever asked for it (the worker whose attempt failed,
    /// or the lost-run recorder), and independently of the job's tick high-water mark (a retry
    /// of tick T is claimable after tick T+1 was). Implemented as a run-now request whose id is
    /// [`RetryOf::request_id`](crate::domain::RetryOf::request_id).
    ///
    /// # Errors
    /// `Unavailable`: nothing was claimed.
    async fn claim_attempt(
        &self,
        job: &JobName,
        tick: DateTime<Utc>,
        attempt: u32,
    ) -> Result<Option<Fence>, BackendError> {
        let retry = crate::domain::RetryOf { scheduled_at: tick, attempt, due_at: tick, backfill: false };
        self.claim_request(job, &retry.request_id(job)).await
    }

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

    /// [`Claims::claim_tick`] that also returns the job's live runs (when `with_running`) and
    /// the previously claimed tick, in one round trip where the store can (etcd: one txn).
    ///
    /// # Errors
    /// `Unavailable`: nothing was claimed.
    async fn claim_tick_checked(
        &self,
        job: &JobName,
        tick: DateTime<Utc>,
        with_running: bool,
    ) -> Result<Option<TickClaim>, BackendError> {
        let Some(fence) = self.claim_tick(job, tick).await? else { return Ok(None) };
        let running = if with_running { self.running(Some(job)).await? } else { Vec::new() };
        Ok(Some(TickClaim { fence, previous: None, running, marked: false }))
    }

    /// [`Claims::claim_tick_checked`] for many ticks (of different jobs) at once, one result
    /// per request in order; each claim succeeds or fails on its own. A won claim with a
    /// [`TickRequest::mark`] writes that mark in the same transaction (all or nothing: an error
    /// means neither the claim nor the mark was written, or, on a lost answer, both). Where the
    /// store can, the batch is one round trip (etcd: one txn of nested txns per 48 claims), so a
    /// worker that owns many jobs due at the same instant costs the store one write, not one
    /// per job. Both adapters implement it atomically; there is no default.
    ///
    /// # Errors
    /// Per request: `Unavailable` (nothing was claimed or marked, unless the answer was lost:
    /// a retry with the same mark then answers as won).
    async fn claim_ticks(&self, requests: &[TickRequest]) -> Vec<Result<Option<TickClaim>, BackendError>>;

    /// Publishes many live runs at once ([`Claims::mark_running`] each; etcd: one txn).
    ///
    /// # Errors
    /// `Unavailable`: some marks may be missing.
    async fn mark_running_many(&self, marks: &[RunningMark]) -> Result<(), BackendError> {
        for mark in marks {
            self.mark_running(mark).await?;
        }
        Ok(())
    }

    /// Removes many marks at once ([`Claims::clear_running`] each; etcd: one txn).
    ///
    /// # Errors
    /// `Unavailable`: some marks may remain.
    async fn clear_running_many(&self, runs: &[(JobName, RunId)]) -> Result<(), BackendError> {
        for (job, run) in runs {
            self.clear_running(job, run).await?;
        }
        Ok(())
    }

    /// The latest claimed tick of `job` this process has seen, without a round trip (etcd: a
    /// cache fed by a watch). A hint for workers that are not a job's owner, to skip a claim
    /// that would fail; `None` when unknown. `claim_tick` stays the only authority.
    fn known_claim(&self, _job: &JobName) -> Option<DateTime<Utc>> {
        None
    }

    /// The last claimed tick of every job that has one (etcd: the `claim/` keys; embedded:
    /// the `claims` table when opened on a file). Catch-up after downtime starts from it.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn last_ticks(&self) -> Result<std::collections::HashMap<JobName, DateTime<Utc>>, BackendError>;

    /// Marks removed because their worker's session expired (not cleared by the worker). A
    /// single process never loses its own runs this way: the embedded stream never yields.
    ///
    /// # Errors
    /// `Unavailable` when the watch cannot be set up.
    async fn watch_lost(&self) -> Result<LostStream, BackendError> {
        Ok(futures::stream::pending().boxed())
    }

    /// Claims an alert: creates `record` under (its job segment, its alert id) unless a record
    /// with that key exists. `Some(revision)`: this caller created it and delivers it; `None`:
    /// someone did before (whatever the clocks), so exactly one caller delivers each alert.
    ///
    /// # Errors
    /// `Unavailable`: nothing was written, or (answer lost) the record was created; a retry then
    /// answers `None` and the record's owner field says whose it is.
    async fn claim_alert(&self, record: &AlertRecord) -> Result<Option<i64>, BackendError> {
        let _ = record;
        Err(alerts_unsupported("claims"))
    }

    /// Replaces the stored record of `record`'s key with `record` only when its revision is
    /// still `revision` (compare-and-set); `Some(new revision)` on success, `None` when the
    /// record changed (another node took the delivery over) or is gone.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn update_alert(&self, record: &AlertRecord, revision: i64) -> Result<Option<i64>, BackendError> {
        let _ = (record, revision);
        Err(alerts_unsupported("claims"))
    }

    /// One alert record by job segment ([`AlertRecord::job_segment`]) and alert id.
    ///
    /// # Errors
    /// `Unavailable`; `Corrupt` when the stored value is not a record.
    async fn get_alert(&self, job: &str, id: &str) -> Result<Option<StoredAlert>, BackendError> {
        let _ = (job, id);
        Err(alerts_unsupported("claims"))
    }

    /// Every alert record of one job segment (of all when `None`), newest `raised_at` first.
    /// Values that are not records are skipped with a warning.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn alerts(&self, job: Option<&str>) -> Result<Vec<StoredAlert>, BackendError> {
        let _ = job;
        Err(alerts_unsupported("claims"))
    }

    /// Deletes alert records last changed before `before`; returns how many.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge_alerts_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let _ = before;
        Err(alerts_unsupported("claims"))
    }
}
