//! In-memory fakes of the four ports for the HTTP tests, with switchable failures so the error
//! paths (503, 500, degraded health) can be driven. Semantics follow `backend::guide`: versions
//! and timestamps set by the store, preconditions checked atomically, watch replays history from
//! a revision then follows live changes, runs newest start time first with an (time, id) cursor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::backend::{
    BackendError, BackendKinds, Backends, Change, Claims, JobStats, JobStore, LogStore, Membership, Precondition,
    PutOutcome, RunCursor, RunFilter, RunPage, RunQuery, RunningMark, Signal, WatchEvent, WatchStream,
};
use crate::domain::{
    AuditContext, AuditEntry, AuditPage, AuditQuery, Fence, Job, JobName, Revision, RunId, RunRecord, WorkerId,
    WorkerInfo,
};

/// How a fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Normally.
    Ok = 0,
    /// `Unavailable` (an outage).
    Down = 1,
    /// `Corrupt` (an internal error).
    Corrupt = 2,
}

#[derive(Default)]
pub(crate) struct Failure(AtomicU8);

impl Failure {
    pub(crate) fn set(&self, mode: Mode) {
        self.0.store(mode as u8, Ordering::SeqCst);
    }
    fn check(&self, backend: &'static str) -> Result<(), BackendError> {
        match self.0.load(Ordering::SeqCst) {
            1 => Err(BackendError::Unavailable { backend, message: "connection refused".into() }),
            2 => Err(BackendError::Corrupt { backend, message: "garbage at key".into() }),
            _ => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct JobsInner {
    jobs: BTreeMap<JobName, Job>,
    rev: i64,
    history: Vec<WatchEvent>,
    audit: Vec<AuditEntry>,
}

/// Fake job store.
pub(crate) struct FakeJobs {
    inner: Mutex<JobsInner>,
    tx: broadcast::Sender<WatchEvent>,
    pub(crate) failure: Failure,
}

impl Default for FakeJobs {
    fn default() -> Self {
        Self { inner: Mutex::default(), tx: broadcast::channel(1024).0, failure: Failure::default() }
    }
}

impl FakeJobs {
    fn record(&self, inner: &mut JobsInner, change: Change) -> Revision {
        inner.rev += 1;
        let ev = WatchEvent { revision: Revision(inner.rev), change };
        inner.history.push(ev.clone());
        let _ = self.tx.send(ev);
        Revision(inner.rev)
    }

    /// Stores a job as the seed would have written it (version 0, no dialect).
    pub(crate) fn insert_raw(&self, job: Job) {
        let mut inner = lock(&self.inner);
        inner.jobs.insert(job.name.clone(), job.clone());
        self.record(&mut inner, Change::Put(job));
    }
}

#[async_trait]
impl JobStore for FakeJobs {
    async fn snapshot(&self) -> Result<(Vec<Job>, Revision), BackendError> {
        self.failure.check("fake job store")?;
        let inner = lock(&self.inner);
        Ok((inner.jobs.values().cloned().collect(), Revision(inner.rev)))
    }

    async fn get(&self, name: &JobName) -> Result<Option<Job>, BackendError> {
        self.failure.check("fake job store")?;
        Ok(lock(&self.inner).jobs.get(name).cloned())
    }

    async fn put(&self, mut job: Job, precondition: Precondition) -> Result<PutOutcome, BackendError> {
        self.failure.check("fake job store")?;
        let mut inner = lock(&self.inner);
        let previous = inner.jobs.get(&job.name).cloned();
        match (precondition, &previous) {
            (Precondition::Absent, Some(_)) => return Err(BackendError::JobExists { name: job.name }),
            (Precondition::Version(_), None) => return Err(BackendError::JobNotFound { name: job.name }),
            (Precondition::Version(v), Some(p)) if p.version != v => {
                return Err(BackendError::VersionConflict { name: job.name, expected: v, found: p.version })
            }
            _ => {}
        }
        let now = Utc::now();
        job.version = previous.as_ref().map_or(1, |p| p.version + 1);
        job.created_at = previous.as_ref().map_or(now, |p| p.created_at);
        job.updated_at = now;
        inner.jobs.insert(job.name.clone(), job.clone());
        let revision = self.record(&mut inner, Change::Put(job.clone()));
        Ok(PutOutcome { previous, job, revision })
    }

    async fn delete(&self, name: &JobName, expected_version: Option<u64>) -> Result<Option<Job>, BackendError> {
        self.failure.check("fake job store")?;
        let mut inner = lock(&self.inner);
        match (expected_version, inner.jobs.get(name)) {
            (Some(_), None) => return Err(BackendError::JobNotFound { name: name.clone() }),
            (Some(v), Some(j)) if j.version != v => {
                return Err(BackendError::VersionConflict { name: name.clone(), expected: v, found: j.version })
            }
            _ => {}
        }
        let removed = inner.jobs.remove(name);
        if removed.is_some() {
            self.record(&mut inner, Change::Delete(name.clone()));
        }
        Ok(removed)
    }

    async fn signal(&self, signal: Signal) -> Result<Revision, BackendError> {
        self.failure.check("fake job store")?;
        let mut inner = lock(&self.inner);
        Ok(self.record(&mut inner, Change::Signal(signal)))
    }

    async fn put_audited(
        &self,
        job: Job,
        precondition: Precondition,
        audit: AuditContext,
    ) -> Result<PutOutcome, BackendError> {
        let out = self.put(job, precondition).await?;
        let entry = audit.entry(&out.job.name, out.previous.as_ref(), Some(&out.job), Utc::now());
        lock(&self.inner).audit.push(entry);
        Ok(out)
    }

    async fn delete_audited(
        &self,
        name: &JobName,
        expected_version: Option<u64>,
        audit: AuditContext,
    ) -> Result<Option<Job>, BackendError> {
        let removed = self.delete(name, expected_version).await?;
        if removed.is_some() {
            let entry = audit.entry(name, removed.as_ref(), None, Utc::now());
            lock(&self.inner).audit.push(entry);
        }
        Ok(removed)
    }

    async fn signal_audited(
        &self,
        signal: Signal,
        current: Option<Job>,
        audit: AuditContext,
    ) -> Result<Revision, BackendError> {
        let job = match &signal {
            Signal::Kill { job, .. } | Signal::RunNow { job, .. } => job.clone(),
        };
        let rev = self.signal(signal).await?;
        let entry = audit.entry(&job, current.as_ref(), current.as_ref(), Utc::now());
        lock(&self.inner).audit.push(entry);
        Ok(rev)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, BackendError> {
        self.failure.check("fake job store")?;
        let inner = lock(&self.inner);
        let found = inner
            .audit
            .iter()
            .rev()
            .filter(|e| query.matches(e) && query.before.as_ref().is_none_or(|b| e.id < *b))
            .take(query.limit as usize + 1)
            .cloned()
            .collect();
        Ok(AuditPage::from_overfetch(found, query.limit))
    }

    async fn purge_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, BackendError> {
        let mut inner = lock(&self.inner);
        let before = inner.audit.len();
        inner.audit.retain(|e| e.at >= cutoff);
        Ok((before - inner.audit.len()) as u64)
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, BackendError> {
        self.failure.check("fake job store")?;
        let inner = lock(&self.inner);
        let past: Vec<_> = inner.history.iter().filter(|e| e.revision >= from).cloned().map(Ok).collect();
        let rx = self.tx.subscribe();
        drop(inner);
        let live = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(futures::stream::iter(past).chain(live).boxed())
    }
}

/// Fake membership.
#[derive(Default)]
pub(crate) struct FakeMembers {
    live: Mutex<BTreeMap<WorkerId, WorkerInfo>>,
    pub(crate) failure: Failure,
}

#[async_trait]
impl Membership for FakeMembers {
    async fn join(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        self.failure.check("fake membership")?;
        lock(&self.live).insert(info.id.clone(), info.clone());
        Ok(())
    }
    async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BackendError> {
        self.join(info).await
    }
    async fn leave(&self, id: &WorkerId) -> Result<(), BackendError> {
        self.failure.check("fake membership")?;
        lock(&self.live).remove(id);
        Ok(())
    }
    async fn live(&self) -> Result<Vec<WorkerInfo>, BackendError> {
        self.failure.check("fake membership")?;
        Ok(lock(&self.live).values().cloned().collect())
    }
}

/// Fake claims (only `running` matters to the HTTP layer).
#[derive(Default)]
pub(crate) struct FakeClaims {
    pub(crate) failure: Failure,
}

#[async_trait]
impl Claims for FakeClaims {
    async fn claim_tick(&self, _job: &JobName, _tick: DateTime<Utc>) -> Result<Option<Fence>, BackendError> {
        self.failure.check("fake claims")?;
        Ok(Some(Fence(1)))
    }
    async fn claim_request(&self, _job: &JobName, _request: &str) -> Result<Option<Fence>, BackendError> {
        self.failure.check("fake claims")?;
        Ok(Some(Fence(1)))
    }
    async fn mark_running(&self, _mark: &RunningMark) -> Result<(), BackendError> {
        self.failure.check("fake claims")
    }
    async fn clear_running(&self, _job: &JobName, _run: &RunId) -> Result<(), BackendError> {
        self.failure.check("fake claims")
    }
    async fn running(&self, _job: Option<&JobName>) -> Result<Vec<RunningMark>, BackendError> {
        self.failure.check("fake claims")?;
        Ok(Vec::new())
    }
    async fn claim_ticks(
        &self,
        requests: &[crate::backend::TickRequest],
    ) -> Vec<Result<Option<crate::backend::TickClaim>, BackendError>> {
        let claim = crate::backend::TickClaim { fence: Fence(1), previous: None, running: Vec::new(), marked: false };
        requests.iter().map(|_| self.failure.check("fake claims").map(|()| Some(claim.clone()))).collect()
    }
}

/// Fake log store.
#[derive(Default)]
pub(crate) struct FakeLogs {
    runs: Mutex<BTreeMap<RunId, RunRecord>>,
    pub(crate) failure: Failure,
}

fn matches(f: &RunFilter, r: &RunRecord) -> bool {
    f.job.as_ref().is_none_or(|j| &r.job == j)
        && f.status.is_none_or(|s| r.status == s)
        && f.worker.as_ref().is_none_or(|w| &r.worker == w)
        && f.from.is_none_or(|t| r.start_time() >= t)
        && f.to.is_none_or(|t| r.start_time() < t)
}

#[async_trait]
impl LogStore for FakeLogs {
    async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError> {
        self.failure.check("fake log store")?;
        let mut runs = lock(&self.runs);
        for r in records {
            runs.insert(r.id.clone(), r.clone());
        }
        Ok(())
    }
    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>, BackendError> {
        self.failure.check("fake log store")?;
        Ok(lock(&self.runs).get(id).cloned())
    }
    async fn query(&self, q: &RunQuery) -> Result<RunPage, BackendError> {
        self.failure.check("fake log store")?;
        let mut all: Vec<RunRecord> = lock(&self.runs).values().filter(|r| matches(&q.filter, r)).cloned().collect();
        all.sort_by(|a, b| (b.start_time(), &b.id).cmp(&(a.start_time(), &a.id)));
        if let Some(c) = &q.after {
            all.retain(|r| (r.start_time(), &r.id) < (c.start_time, &c.id));
        }
        let rest: Vec<RunRecord> = all.into_iter().skip(q.skip as usize).collect();
        let more = rest.len() > q.limit as usize;
        let runs: Vec<RunRecord> = rest.into_iter().take(q.limit as usize).collect();
        let next_cursor = if more {
            runs.last().map(|r| RunCursor { start_time: r.start_time(), id: r.id.clone() }.encode())
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }
    async fn count(&self, filter: &RunFilter) -> Result<u64, BackendError> {
        self.failure.check("fake log store")?;
        Ok(lock(&self.runs).values().filter(|r| matches(filter, r)).count() as u64)
    }
    async fn stats(&self, _job: &JobName, _since: DateTime<Utc>) -> Result<JobStats, BackendError> {
        self.failure.check("fake log store")?;
        Ok(JobStats::default())
    }
    async fn purge_before(&self, _before: DateTime<Utc>) -> Result<u64, BackendError> {
        self.failure.check("fake log store")?;
        Ok(0)
    }
    async fn ping(&self) -> Result<(), BackendError> {
        self.failure.check("fake log store")
    }
}

/// The fakes, kept typed so tests can seed data and switch failures.
#[derive(Default, Clone)]
pub(crate) struct Fakes {
    pub(crate) jobs: Arc<FakeJobs>,
    pub(crate) members: Arc<FakeMembers>,
    pub(crate) claims: Arc<FakeClaims>,
    pub(crate) logs: Arc<FakeLogs>,
}

impl Fakes {
    /// The fakes as the ports.
    pub(crate) fn backends(&self) -> Backends {
        Backends {
            jobs: self.jobs.clone(),
            members: self.members.clone(),
            claims: self.claims.clone(),
            logs: self.logs.clone(),
            kinds: BackendKinds { jobs: "fake", members: "fake", claims: "fake", logs: "fake" },
        }
    }
}
