//! [`Faulty`]: a fault-injecting wrapper over a real adapter, for tests (compiled only for unit
//! tests and, through the `conformance` feature, for the integration tests and benches).
//!
//! Owns: injecting failures, delays, hangs and per-record refusals into chosen operations of any
//! port, counting calls, and [`FaultyBackends`], the embedded adapters (SQLite job store and run
//! log, in-process membership and claims) each wrapped so. Leaves to others: every semantic of
//! the ports (the wrapped adapter answers whenever no fault is set, so tests exercise the real
//! stores and not a double that could drift from the port contract).
//!
//! A fault is set per operation, named as the port's method (`"append_batch"`, `"snapshot"`, …),
//! or for every operation with [`ANY`]; the operation's own entry wins over [`ANY`].
//!
//! ```text
//! let logs = Arc::new(Faulty::new(SqliteLogStore::open(&path)?, "sqlite run log"));
//! logs.fail("append_batch", Fault::Down);    // writes fail as in an outage
//! logs.heal("append_batch");                 // and work again
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use super::claims::{LostStream, RunningMark, TickClaim, TickRequest};
use super::embedded::{EmbeddedClaims, EmbeddedJobStore, EmbeddedMembership, SqliteLogStore};
use super::jobs::{JobSnapshot, PutOutcome, Signal, WatchStream};
use super::logs::{JobStats, RetentionPolicy, RunFilter, RunPage, RunQuery};
use super::members::SessionEvent;
use super::{BackendError, BackendKinds, Backends, Claims, JobStore, LogStore, Membership, Precondition, RejectedRun};
use crate::domain::{
    AuditContext, AuditPage, AuditQuery, Fence, Job, JobName, Revision, RunId, RunRecord, WorkerId, WorkerInfo,
};

/// Applies a fault to every operation of a wrapper (an operation's own fault wins).
pub const ANY: &str = "*";

/// How often a hanging operation looks whether its fault was cleared.
const HANG_POLL: Duration = Duration::from_millis(10);

/// Decides whether `append_batch` refuses a record, and why.
pub type RefuseFn = Arc<dyn Fn(&RunRecord) -> Option<String> + Send + Sync>;

/// What an operation does instead of answering (or before it answers).
#[derive(Clone)]
pub enum Fault {
    /// Fails with `Unavailable` ("connection refused"): an outage.
    Down,
    /// Fails with `Corrupt` ("garbage at key"): an internal error.
    Corrupt,
    /// Waits this long, then answers.
    Delay(Duration),
    /// Waits this long per record of the call (`append_batch`; once for the others), then
    /// answers: a store whose cost grows with the batch.
    DelayPerRecord(Duration),
    /// Gives no answer (no error either) while the fault is set, as a paused server; then answers.
    Hang,
    /// `append_batch`: the records this function gives a reason for are refused one by one
    /// (`Rejected`, as a store refuses a document it cannot take); the others are written.
    Refuse(RefuseFn),
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Down => f.write_str("Down"),
            Self::Corrupt => f.write_str("Corrupt"),
            Self::Delay(d) => write!(f, "Delay({d:?})"),
            Self::DelayPerRecord(d) => write!(f, "DelayPerRecord({d:?})"),
            Self::Hang => f.write_str("Hang"),
            Self::Refuse(_) => f.write_str("Refuse(..)"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A real adapter `T` whose operations can be told to fail, wait, hang or refuse records.
pub struct Faulty<T> {
    inner: T,
    /// Named in injected errors.
    backend: &'static str,
    faults: Mutex<HashMap<&'static str, Fault>>,
    calls: Mutex<HashMap<&'static str, usize>>,
}

impl<T> Faulty<T> {
    /// Wraps `inner`, naming it `backend` in the errors it injects; no fault set.
    pub fn new(inner: T, backend: &'static str) -> Self {
        Self { inner, backend, faults: Mutex::default(), calls: Mutex::default() }
    }

    /// The wrapped adapter, to look at the store behind the faults.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// From now on, `op` (a method name, or [`ANY`]) behaves as `fault` says.
    pub fn fail(&self, op: &'static str, fault: Fault) {
        lock(&self.faults).insert(op, fault);
    }

    /// Clears the fault of `op` (a hanging call then answers).
    pub fn heal(&self, op: &'static str) {
        lock(&self.faults).remove(op);
    }

    /// Clears every fault.
    pub fn heal_all(&self) {
        lock(&self.faults).clear();
    }

    /// Calls of `op` so far (faulted or not).
    pub fn calls(&self, op: &'static str) -> usize {
        lock(&self.calls).get(op).copied().unwrap_or(0)
    }

    fn fault(&self, op: &'static str) -> Option<Fault> {
        let faults = lock(&self.faults);
        faults.get(op).or_else(|| faults.get(ANY)).cloned()
    }

    /// The error `fault` injects, if it is an error.
    fn error(&self, fault: &Fault) -> Option<BackendError> {
        match fault {
            Fault::Down => {
                Some(BackendError::Unavailable { backend: self.backend, message: "connection refused".into() })
            }
            Fault::Corrupt => Some(BackendError::Corrupt { backend: self.backend, message: "garbage at key".into() }),
            _ => None,
        }
    }

    /// A copy of the injected error `e` (errors are not `Clone`).
    fn again(&self, e: &BackendError) -> BackendError {
        match e {
            BackendError::Corrupt { message, .. } => {
                BackendError::Corrupt { backend: self.backend, message: message.clone() }
            }
            other => BackendError::Unavailable { backend: self.backend, message: other.to_string() },
        }
    }

    /// Counts a call of `op` (carrying `records` records) and applies its fault: an error, a
    /// wait, or a hang until the fault is cleared.
    async fn enter(&self, op: &'static str, records: usize) -> Result<(), BackendError> {
        *lock(&self.calls).entry(op).or_insert(0) += 1;
        let Some(fault) = self.fault(op) else { return Ok(()) };
        if let Some(e) = self.error(&fault) {
            return Err(e);
        }
        match fault {
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::DelayPerRecord(d) => {
                tokio::time::sleep(d.saturating_mul(u32::try_from(records.max(1)).unwrap_or(u32::MAX))).await;
            }
            Fault::Hang => {
                while matches!(self.fault(op), Some(Fault::Hang)) {
                    tokio::time::sleep(HANG_POLL).await;
                }
            }
            Fault::Down | Fault::Corrupt | Fault::Refuse(_) => {}
        }
        Ok(())
    }
}

#[async_trait]
impl<T: JobStore> JobStore for Faulty<T> {
    async fn snapshot(&self) -> Result<(Vec<Job>, Revision), BackendError> {
        self.enter("snapshot", 0).await?;
        self.inner.snapshot().await
    }
    async fn snapshot_checked(&self) -> Result<JobSnapshot, BackendError> {
        self.enter("snapshot", 0).await?;
        self.inner.snapshot_checked().await
    }
    async fn get(&self, name: &JobName) -> Result<Option<Job>, BackendError> {
        self.enter("get", 0).await?;
        self.inner.get(name).await
    }
    async fn put(&self, job: Job, precondition: Precondition) -> Result<PutOutcome, BackendError> {
        self.enter("put", 0).await?;
        self.inner.put(job, precondition).await
    }
    async fn delete(&self, name: &JobName, expected_version: Option<u64>) -> Result<Option<Job>, BackendError> {
        self.enter("delete", 0).await?;
        self.inner.delete(name, expected_version).await
    }
    async fn signal(&self, signal: Signal) -> Result<Revision, BackendError> {
        self.enter("signal", 0).await?;
        self.inner.signal(signal).await
    }
    async fn watch(&self, from: Revision) -> Result<WatchStream, BackendError> {
        self.enter("watch", 0).await?;
        self.inner.watch(from).await
    }
    async fn put_audited(
        &self,
        job: Job,
        precondition: Precondition,
        audit: AuditContext,
    ) -> Result<PutOutcome, BackendError> {
        self.enter("put", 0).await?;
        self.inner.put_audited(job, precondition, audit).await
    }
    async fn delete_audited(
        &self,
        name: &JobName,
        expected_version: Option<u64>,
        audit: AuditContext,
    ) -> Result<Option<Job>, BackendError> {
        self.enter("delete", 0).await?;
        self.inner.delete_audited(name, expected_version, audit).await
    }
    async fn signal_audited(
        &self,
        signal: Signal,
        current: Option<Job>,
        audit: AuditContext,
    ) -> Result<Revision, BackendError> {
        self.enter("signal", 0).await?;
        self.inner.signal_audited(signal, current, audit).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, BackendError> {
        self.enter("audit", 0).await?;
        self.inner.audit(query).await
    }
    async fn purge_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, BackendError> {
        self.enter("purge_audit_before", 0).await?;
        self.inner.purge_audit_before(cutoff).await
    }
}

#[async_trait]
impl<T: LogStore> LogStore for Faulty<T> {
    async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError> {
        self.enter("append_batch", records.len()).await?;
        let Some(Fault::Refuse(refuse)) = self.fault("append_batch") else {
            return self.inner.append_batch(records).await;
        };
        let mut good = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for r in records {
            match refuse(r) {
                Some(reason) => rejected.push(RejectedRun { id: r.id.clone(), status: r.status, reason }),
                None => good.push(r.clone()),
            }
        }
        self.inner.append_batch(&good).await?;
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Rejected { backend: self.backend, rejected })
        }
    }
    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>, BackendError> {
        self.enter("get", 0).await?;
        self.inner.get(id).await
    }
    async fn query(&self, query: &RunQuery) -> Result<RunPage, BackendError> {
        self.enter("query", 0).await?;
        self.inner.query(query).await
    }
    async fn read_output(&self, id: &RunId, max_bytes: usize) -> Result<Option<(String, u64)>, BackendError> {
        self.enter("read_output", 0).await?;
        self.inner.read_output(id, max_bytes).await
    }
    async fn query_with_output(&self, query: &RunQuery, output_budget: usize) -> Result<RunPage, BackendError> {
        self.enter("query", 0).await?;
        self.inner.query_with_output(query, output_budget).await
    }
    async fn last_runs(&self, jobs: &[JobName]) -> Result<HashMap<JobName, RunRecord>, BackendError> {
        self.enter("last_runs", 0).await?;
        self.inner.last_runs(jobs).await
    }
    async fn count(&self, filter: &RunFilter) -> Result<u64, BackendError> {
        self.enter("count", 0).await?;
        self.inner.count(filter).await
    }
    async fn stats(&self, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError> {
        self.enter("stats", 0).await?;
        self.inner.stats(job, since).await
    }
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        self.enter("purge_before", 0).await?;
        self.inner.purge_before(before).await
    }
    async fn apply_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<u64, BackendError> {
        self.enter("purge_before", 0).await?;
        self.inner.apply_retention(policy, now).await
    }
    async fn ping(&self) -> Result<(), BackendError> {
        self.enter("ping", 0).await?;
        self.inner.ping().await
    }
}

#[async_trait]
impl<T: Membership> Membership for Faulty<T> {
    async fn join(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        self.enter("join", 0).await?;
        self.inner.join(info).await
    }
    async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        self.enter("heartbeat", 0).await?;
        self.inner.heartbeat(info).await
    }
    async fn leave(&self, id: &WorkerId) -> Result<(), BackendError> {
        self.enter("leave", 0).await?;
        self.inner.leave(id).await
    }
    async fn live(&self) -> Result<Vec<WorkerInfo>, BackendError> {
        self.enter("live", 0).await?;
        self.inner.live().await
    }
    fn session_events(&self) -> BoxStream<'static, SessionEvent> {
        self.inner.session_events()
    }
}

#[async_trait]
impl<T: Claims> Claims for Faulty<T> {
    async fn claim_tick(&self, job: &JobName, tick: DateTime<Utc>) -> Result<Option<Fence>, BackendError> {
        self.enter("claim_tick", 0).await?;
        self.inner.claim_tick(job, tick).await
    }
    async fn claim_request(&self, job: &JobName, request: &str) -> Result<Option<Fence>, BackendError> {
        self.enter("claim_request", 0).await?;
        self.inner.claim_request(job, request).await
    }
    async fn mark_running(&self, mark: &RunningMark) -> Result<(), BackendError> {
        self.enter("mark_running", 0).await?;
        self.inner.mark_running(mark).await
    }
    async fn clear_running(&self, job: &JobName, run: &RunId) -> Result<(), BackendError> {
        self.enter("clear_running", 0).await?;
        self.inner.clear_running(job, run).await
    }
    async fn running(&self, job: Option<&JobName>) -> Result<Vec<RunningMark>, BackendError> {
        self.enter("running", 0).await?;
        self.inner.running(job).await
    }
    async fn last_ticks(&self) -> Result<HashMap<JobName, DateTime<Utc>>, BackendError> {
        self.enter("last_ticks", 0).await?;
        self.inner.last_ticks().await
    }
    async fn claim_tick_checked(
        &self,
        job: &JobName,
        tick: DateTime<Utc>,
        with_running: bool,
    ) -> Result<Option<TickClaim>, BackendError> {
        self.enter("claim_tick", 0).await?;
        self.inner.claim_tick_checked(job, tick, with_running).await
    }
    async fn claim_ticks(&self, requests: &[TickRequest]) -> Vec<Result<Option<TickClaim>, BackendError>> {
        if let Err(e) = self.enter("claim_ticks", requests.len()).await {
            // The same injected error for each request.
            return requests.iter().map(|_| Err(self.again(&e))).collect();
        }
        self.inner.claim_ticks(requests).await
    }
    async fn mark_running_many(&self, marks: &[RunningMark]) -> Result<(), BackendError> {
        self.enter("mark_running", marks.len()).await?;
        self.inner.mark_running_many(marks).await
    }
    async fn clear_running_many(&self, runs: &[(JobName, RunId)]) -> Result<(), BackendError> {
        self.enter("clear_running", runs.len()).await?;
        self.inner.clear_running_many(runs).await
    }
    fn known_claim(&self, job: &JobName) -> Option<DateTime<Utc>> {
        self.inner.known_claim(job)
    }
    async fn watch_lost(&self) -> Result<LostStream, BackendError> {
        self.enter("watch_lost", 0).await?;
        self.inner.watch_lost().await
    }
}

/// The embedded adapters under one data directory, each behind a [`Faulty`].
#[derive(Clone)]
pub struct FaultyBackends {
    /// The SQLite job store.
    pub jobs: Arc<Faulty<EmbeddedJobStore>>,
    /// In-process membership.
    pub members: Arc<Faulty<EmbeddedMembership>>,
    /// In-process claims.
    pub claims: Arc<Faulty<EmbeddedClaims>>,
    /// The SQLite run log.
    pub logs: Arc<Faulty<SqliteLogStore>>,
    data_dir: PathBuf,
}

impl FaultyBackends {
    /// Opens the embedded adapters under `data_dir` (as [`Backends::embedded`]), wrapped.
    ///
    /// # Errors
    /// When `data_dir` cannot be created or a store file cannot be opened.
    pub fn open(data_dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(data_dir).map_err(|source| BackendError::Io {
            context: format!("cannot create data_dir {}", data_dir.display()),
            source,
        })?;
        Ok(Self {
            jobs: Arc::new(Faulty::new(EmbeddedJobStore::open(&data_dir.join("jobs.sqlite3"))?, "embedded job store")),
            members: Arc::new(Faulty::new(EmbeddedMembership::default(), "embedded membership")),
            claims: Arc::new(Faulty::new(EmbeddedClaims::default(), "embedded claims")),
            logs: Arc::new(Faulty::new(SqliteLogStore::open(&data_dir.join("runs.sqlite3"))?, "embedded run log")),
            data_dir: data_dir.to_owned(),
        })
    }

    /// The wrapped adapters as the ports.
    pub fn backends(&self) -> Backends {
        Backends {
            jobs: self.jobs.clone(),
            members: self.members.clone(),
            claims: self.claims.clone(),
            logs: self.logs.clone(),
            kinds: BackendKinds {
                jobs: "embedded (SQLite), faulty",
                members: "embedded (in-process), faulty",
                claims: "embedded (in-process), faulty",
                logs: "embedded (SQLite), faulty",
            },
        }
    }

    /// Stores `json` under the job key `name` as another writer (the seed) would have: as is,
    /// without a version, validation or watch event.
    ///
    /// # Errors
    /// When the job store file cannot be written.
    pub fn store_raw_job(&self, name: &str, json: &str) -> Result<(), BackendError> {
        let path = self.data_dir.join("jobs.sqlite3");
        let err = |e: rusqlite::Error| BackendError::Sqlite {
            context: format!("cannot write job {name} into {}", path.display()),
            source: e,
        };
        let conn = rusqlite::Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.execute(
            "INSERT INTO jobs (name, json, mod_revision) VALUES (?1, ?2, (SELECT revision FROM meta WHERE id = 1))
             ON CONFLICT(name) DO UPDATE SET json = excluded.json",
            rusqlite::params![name, json],
        )
        .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RunStatus, Trigger};

    fn record(i: i64, output: &str) -> RunRecord {
        let mut r = RunRecord::not_run(
            JobName::parse("j").expect("name"),
            "true".into(),
            RunStatus::Succeeded,
            Trigger::Schedule,
            Utc::now(),
            WorkerId("w".into()),
            Fence(i),
            String::new(),
        );
        r.output = output.into();
        r
    }

    #[tokio::test]
    async fn faults_apply_per_operation_and_heal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = FaultyBackends::open(dir.path()).expect("open");
        b.logs.fail("append_batch", Fault::Down);
        let e = b.logs.append_batch(&[record(1, "a")]).await.expect_err("down");
        assert!(e.is_transient() && e.to_string().contains("connection refused"), "{e}");
        assert_eq!(b.logs.count(&RunFilter::default()).await.expect("count works"), 0);
        b.logs.fail(ANY, Fault::Corrupt);
        assert!(matches!(b.logs.ping().await, Err(BackendError::Corrupt { .. })));
        assert!(matches!(b.logs.append_batch(&[]).await, Err(BackendError::Unavailable { .. })), "own fault wins");
        b.logs.heal_all();
        b.logs.append_batch(&[record(1, "a")]).await.expect("healed");
        assert_eq!(b.logs.inner().count(&RunFilter::default()).await.expect("count"), 1);
        // Down, the own fault that won over `ANY`, healed: every call counted, faulted or not.
        assert_eq!(b.logs.calls("append_batch"), 3);
    }

    #[tokio::test]
    async fn refused_records_are_rejected_one_by_one_and_the_rest_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = FaultyBackends::open(dir.path()).expect("open");
        b.logs.fail(
            "append_batch",
            Fault::Refuse(Arc::new(|r: &RunRecord| (r.output == "poison").then(|| "code 121".to_owned()))),
        );
        let poison = record(2, "poison");
        match b.logs.append_batch(&[record(1, "a"), poison.clone()]).await {
            Err(BackendError::Rejected { rejected, .. }) => {
                assert_eq!(rejected.iter().map(|r| &r.id).collect::<Vec<_>>(), vec![&poison.id]);
            }
            other => panic!("expected a refusal: {other:?}"),
        }
        assert_eq!(b.logs.count(&RunFilter::default()).await.expect("count"), 1);
    }

    #[tokio::test]
    async fn a_hanging_operation_answers_once_healed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = FaultyBackends::open(dir.path()).expect("open");
        b.jobs.fail("snapshot", Fault::Hang);
        let hung = tokio::time::timeout(Duration::from_millis(100), b.jobs.snapshot()).await;
        assert!(hung.is_err(), "no answer while hanging");
        let jobs = b.jobs.clone();
        let call = tokio::spawn(async move { jobs.snapshot().await.map(|(j, _)| j.len()) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        b.jobs.heal("snapshot");
        assert_eq!(call.await.expect("task").expect("snapshot"), 0);
    }

    #[tokio::test]
    async fn a_raw_job_reads_back_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = FaultyBackends::open(dir.path()).expect("open");
        b.store_raw_job("old", r#"{"name":"old","command":"true","cron_expr":"0 12 1 1 * 2030"}"#).expect("raw");
        let job = b.jobs.get(&JobName::parse("old").expect("name")).await.expect("get").expect("stored");
        assert_eq!(job.version, 0);
    }
}
