//! The job store port: jobs, control signals (kill, run now) and a watch of every change.

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::BackendError;
use chrono::{DateTime, Utc};

use crate::domain::{AuditContext, AuditPage, AuditQuery, InvalidJob, Job, JobName, Revision, RunId};

/// A condition a write must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is stored (last writer wins; the seed's behaviour).
    Any,
    /// Create only: fail with `JobExists` when the job exists.
    Absent,
    /// Replace only when the stored version is this one (`JobNotFound` / `VersionConflict` otherwise).
    Version(u64),
}

/// Result of a successful put.
#[derive(Debug, Clone, PartialEq)]
pub struct PutOutcome {
    /// The job as it was before, if it existed.
    pub previous: Option<Job>,
    /// The job as stored (version and timestamps set by the store).
    pub job: Job,
    /// Revision of the write.
    pub revision: Revision,
}

/// A control signal, delivered to every watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Kill the live runs of a job (one run when `run` is set), wherever they run.
    Kill {
        /// Job.
        job: JobName,
        /// Only this run; `None` = every live run of the job.
        run: Option<RunId>,
    },
    /// Start a run now, once, on one worker.
    RunNow {
        /// Job.
        job: JobName,
        /// Unique request id: the claim key that makes the run happen once.
        request: String,
        /// Run parameters: extra environment variables for this run (empty = none).
        env: std::collections::BTreeMap<String, String>,
        /// Set when the request is a later attempt of a failed run (job `retry`).
        retry: Option<crate::domain::RetryOf>,
    },
}

/// What changed.
// A watch event lives only until the WatchActor has handled it: boxing the job buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Job created or replaced.
    Put(Job),
    /// Job deleted.
    Delete(JobName),
    /// Control signal.
    Signal(Signal),
    /// A job document was written that is not a valid job (issue 9, item 8): its previous
    /// definition stops too, and it is reported until fixed.
    Invalid(InvalidJob),
}

impl JobSnapshot {
    /// Adds the document stored under `name`, validated exactly as API input (issue 9, item 8):
    /// a valid job to `jobs`, anything else to `invalid` with its reason.
    pub fn add_stored(&mut self, name: &JobName, value: &[u8]) {
        match Job::from_stored(name, value) {
            Ok(job) => self.jobs.push(job),
            Err(invalid) => self.invalid.push(invalid),
        }
    }
}

/// A full read of the job store at one revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobSnapshot {
    /// Every valid job.
    pub jobs: Vec<Job>,
    /// Every stored document under a job key that is not a valid job, with the reason.
    pub invalid: Vec<InvalidJob>,
    /// The revision the read is consistent at.
    pub revision: Revision,
}

/// One change with the store revision that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// Revision of the change.
    pub revision: Revision,
    /// The change.
    pub change: Change,
}

/// A stream of changes in revision order. An `Err(Compacted)` item means the watcher fell
/// behind history and must resync from a fresh snapshot; the stream ends after an error.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, BackendError>>;

/// Jobs and control signals.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Every job and the revision the snapshot is at.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot be read. Entries that do not parse as jobs are
    /// skipped with a warning, not returned as errors.
    async fn snapshot(&self) -> Result<(Vec<Job>, Revision), BackendError>;

    /// Every job, every stored document that is not a valid job (validated exactly as API input,
    /// see [`Job::from_stored`]) and the revision, in one consistent read. Adapters whose
    /// documents can be written around distcron (etcd, the embedded file) override this; the
    /// default reports no invalid documents.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot be read.
    async fn snapshot_checked(&self) -> Result<JobSnapshot, BackendError> {
        let (jobs, revision) = self.snapshot().await?;
        Ok(JobSnapshot { jobs, invalid: Vec::new(), revision })
    }

    /// One job.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot be read.
    async fn get(&self, name: &JobName) -> Result<Option<Job>, BackendError>;

    /// Writes `job` if `precondition` holds. The store sets `version` (previous + 1, or 1),
    /// keeps `created_at` of the previous job (or sets it) and sets `updated_at`; the caller's
    /// values of those fields are ignored. Atomic: two writers with the same expected version
    /// cannot both succeed.
    ///
    /// # Errors
    /// `JobExists`, `JobNotFound`, `VersionConflict` per the precondition; `Unavailable`.
    async fn put(&self, job: Job, precondition: Precondition) -> Result<PutOutcome, BackendError>;

    /// Deletes a job, if `expected_version` (when given) matches. Returns the deleted job, or
    /// `None` when there was none (and no version was expected).
    ///
    /// # Errors
    /// `JobNotFound` / `VersionConflict` when a version was expected; `Unavailable`.
    async fn delete(&self, name: &JobName, expected_version: Option<u64>) -> Result<Option<Job>, BackendError>;

    /// Publishes a control signal to every watcher (signals are not kept as state).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn signal(&self, signal: Signal) -> Result<Revision, BackendError>;

    /// Every change with revision >= `from`, in order, then live changes.
    ///
    /// # Errors
    /// `Compacted` when `from` is older than the history kept; `Unavailable`.
    async fn watch(&self, from: Revision) -> Result<WatchStream, BackendError>;

    /// [`JobStore::put`], recording `audit` (with the job before and after) in the same
    /// transaction: the change and its audit entry are stored together or not at all.
    ///
    /// # Errors
    /// As [`JobStore::put`].
    async fn put_audited(
        &self,
        job: Job,
        precondition: Precondition,
        audit: AuditContext,
    ) -> Result<PutOutcome, BackendError>;

    /// [`JobStore::delete`], recording `audit` in the same transaction (only when a job was
    /// deleted).
    ///
    /// # Errors
    /// As [`JobStore::delete`].
    async fn delete_audited(
        &self,
        name: &JobName,
        expected_version: Option<u64>,
        audit: AuditContext,
    ) -> Result<Option<Job>, BackendError>;

    /// [`JobStore::signal`], recording `audit` in the same transaction; `current` is the job as
    /// the caller read it (its version is recorded before and after), if it exists.
    ///
    /// # Errors
    /// As [`JobStore::signal`].
    async fn signal_audited(
        &self,
        signal: Signal,
        current: Option<Job>,
        audit: AuditContext,
    ) -> Result<Revision, BackendError>;

    /// Audit entries matching `query`, newest first, at most `query.limit`, with the cursor of
    /// the next page.
    ///
    /// # Errors
    /// `Unavailable`. Entries that do not parse are skipped with a warning.
    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, BackendError>;

    /// Deletes the audit entries made before `cutoff`; returns how many (an estimate is fine
    /// where the store does not count).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, BackendError>;
}
