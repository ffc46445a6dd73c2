//! Plain data and pure logic: jobs, runs, workers and the cron dialect.
//!
//! Nothing here does I/O or knows about actix or a backend crate; the actors, the HTTP layer and
//! the backends all speak these types.

pub mod access;
pub mod alert;
pub mod audit;
pub mod backoff;
pub mod catchup;
pub mod job;
pub mod jobs_as_code;
pub mod labels;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod worker;

pub use access::{AccessRole, Caller};
pub use alert::{Alert, AlertKind, AlertRecord, AlertRule, DeliveryState};
pub use audit::{AuditAction, AuditContext, AuditEntry, AuditPage, AuditQuery};
pub use backoff::Backoff;
pub use catchup::{CatchUp, CatchUpPolicy};
pub use job::{
    check_run_as, jitter_offset, ConcurrencyPolicy, InvalidJob, Job, JobLimits, JobName, JobSpec, JobValidationError,
    MAX_JITTER_SECS,
};
pub use labels::Labels;
pub use retry::{RetryOf, RetryOn, RetryPolicy};
pub use run::{Fence, RunId, RunRecord, RunStatus, Trigger};
pub use schedule::{CronError, Dialect, Schedule};
pub use worker::{WorkerId, WorkerInfo};

/// A store revision: a monotonically increasing number assigned to every change of the job store
/// (etcd's revision in cluster mode, a local counter in the embedded store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Revision(pub i64);

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
