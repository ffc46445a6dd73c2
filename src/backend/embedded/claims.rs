//! Embedded claims: tick high-water marks, run-now request claims and running marks, in
//! process memory.
//!
//! A tick claim succeeds only when the tick is later (at millisecond precision, as in etcd's
//! zero-padded key) than every tick of the job claimed before. Fences come from one counter
//! seeded with the wall clock in microseconds at start, so they keep increasing across
//! restarts of the node (unless its clock steps back further than the node was down).
//! Run-now request ids are remembered for an hour, at most 100,000 of them.
//!
//! A batch of tick claims ([`Claims::claim_ticks`]) is decided under one lock, each claim with
//! its running mark (the etcd adapter's single transaction, in memory).
//!
//! Alert claims and records are kept in SQLite ([`super::alerts`]): `alerts.sqlite3` under
//! `data_dir` ([`EmbeddedClaims::with_alert_file`]), in memory otherwise.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::alerts::AlertTable;
use crate::backend::claims::{Claims, RunningMark, StoredAlert, TickClaim, TickRequest};
use crate::backend::BackendError;
use crate::domain::{AlertRecord, Fence, JobName, RunId};

/// How long a claimed run-now request id is remembered.
pub(crate) const DEFAULT_REQUEST_TTL: Duration = Duration::from_secs(3600);
/// Most run-now request ids remembered.
pub(crate) const DEFAULT_MAX_REQUESTS: usize = 100_000;

/// In-process claims for a single node.
#[derive(Debug)]
pub struct EmbeddedClaims {
    request_ttl: Duration,
    max_requests: usize,
    state: Mutex<State>,
    alerts: AlertTable,
}

#[derive(Debug)]
struct State {
    /// Last fence handed out.
    fence: i64,
    /// Per job, the latest claimed tick in ms since the epoch.
    ticks: HashMap<JobName, i64>,
    /// Claimed (job, request) keys, with their claim order for eviction.
    requests: HashSet<(JobName, String)>,
    request_order: VecDeque<(Instant, (JobName, String))>,
    running: BTreeMap<(JobName, RunId), RunningMark>,
}

impl Default for EmbeddedClaims {
    fn default() -> Self {
        Self::new(DEFAULT_REQUEST_TTL, DEFAULT_MAX_REQUESTS)
    }
}

impl EmbeddedClaims {
    /// Claims that remember a run-now request for `request_ttl`, at most `max_requests` of them.
    pub fn new(request_ttl: Duration, max_requests: usize) -> Self {
        let fence = Utc::now().timestamp_micros().max(0);
        Self {
            request_ttl,
            max_requests: max_requests.max(1),
            state: Mutex::new(State {
                fence,
                ticks: HashMap::new(),
                requests: HashSet::new(),
                request_order: VecDeque::new(),
                running: BTreeMap::new(),
            }),
            alerts: AlertTable::in_memory().expect("an in-memory SQLite database always opens"),
        }
    }

    /// Default claims whose alert records live in the SQLite file at `path` (kept across
    /// restarts of the node).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn with_alert_file(path: &std::path::Path) -> Result<Self, BackendError> {
        Ok(Self { alerts: AlertTable::open(path)?, ..Self::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn next_fence(&mut self) -> Fence {
        self.fence += 1;
        Fence(self.fence)
    }

    /// One tick claim with its mark, decided alone (see [`Claims::claim_ticks`]).
    fn claim(&mut self, r: &TickRequest) -> Option<TickClaim> {
        let tick_ms = r.tick.timestamp_millis();
        let previous = self.ticks.get(&r.job).copied();
        let others = |state: &State, except: Option<&RunId>| -> Vec<RunningMark> {
            state.running.values().filter(|m| m.job == r.job && Some(&m.run) != except).cloned().collect()
        };
        let want_running = r.with_running || r.mark_if_idle;
        if previous.is_some_and(|mark| mark >= tick_ms) {
            // A retried claim whose first attempt won (its answer lost): its mark says so.
            let mark = r.mark.as_ref()?;
            let kept = self.running.get(&(mark.job.clone(), mark.run.clone()))?;
            let fence = kept.fence?;
            let running = if want_running { others(self, Some(&mark.run)) } else { Vec::new() };
            return Some(TickClaim { fence, previous: None, running, marked: true });
        }
        self.ticks.insert(r.job.clone(), tick_ms);
        let fence = self.next_fence();
        let running = others(self, None);
        let marked = match &r.mark {
            Some(mark) if !r.mark_if_idle || running.is_empty() => {
                let mut mark = mark.clone();
                mark.fence = Some(fence);
                self.running.insert((mark.job.clone(), mark.run.clone()), mark);
                true
            }
            _ => false,
        };
        Some(TickClaim {
            fence,
            previous: previous.and_then(DateTime::from_timestamp_millis),
            running: if want_running { running } else { Vec::new() },
            marked,
        })
    }

    fn forget_old_requests(&mut self, ttl: Duration, max: usize) {
        while let Some((at, _)) = self.request_order.front() {
            if at.elapsed() < ttl && self.request_order.len() < max {
                break;
            }
            if let Some((_, key)) = self.request_order.pop_front() {
                self.requests.remove(&key);
            }
        }
    }
}

#[async_trait]
impl Claims for EmbeddedClaims {
    async fn claim_tick(&self, job: &JobName, tick: DateTime<Utc>) -> Result<Option<Fence>, BackendError> {
        let tick_ms = tick.timestamp_millis();
        let mut state = self.lock();
        if state.ticks.get(job).is_some_and(|&mark| mark >= tick_ms) {
            return Ok(None);
        }
        state.ticks.insert(job.clone(), tick_ms);
        Ok(Some(state.next_fence()))
    }

    async fn claim_tick_checked(
        &self,
        job: &JobName,
        tick: DateTime<Utc>,
        with_running: bool,
    ) -> Result<Option<TickClaim>, BackendError> {
        Ok(self.lock().claim(&TickRequest::unmarked(job.clone(), tick, with_running)))
    }

    async fn claim_ticks(&self, requests: &[TickRequest]) -> Vec<Result<Option<TickClaim>, BackendError>> {
        let mut state = self.lock();
        requests.iter().map(|r| Ok(state.claim(r))).collect()
    }

    async fn claim_request(&self, job: &JobName, request: &str) -> Result<Option<Fence>, BackendError> {
        let mut state = self.lock();
        state.forget_old_requests(self.request_ttl, self.max_requests);
        let key = (job.clone(), request.to_owned());
        if state.requests.contains(&key) {
            return Ok(None);
        }
        state.requests.insert(key.clone());
        state.request_order.push_back((Instant::now(), key));
        Ok(Some(state.next_fence()))
    }

    async fn mark_running(&self, mark: &RunningMark) -> Result<(), BackendError> {
        self.lock().running.insert((mark.job.clone(), mark.run.clone()), mark.clone());
        Ok(())
    }

    async fn clear_running(&self, job: &JobName, run: &RunId) -> Result<(), BackendError> {
        self.lock().running.remove(&(job.clone(), run.clone()));
        Ok(())
    }

    async fn running(&self, job: Option<&JobName>) -> Result<Vec<RunningMark>, BackendError> {
        let state = self.lock();
        Ok(state.running.values().filter(|m| job.is_none_or(|j| &m.job == j)).cloned().collect())
    }

    async fn claim_alert(&self, record: &AlertRecord) -> Result<Option<i64>, BackendError> {
        self.alerts.claim(record).await
    }

    async fn update_alert(&self, record: &AlertRecord, revision: i64) -> Result<Option<i64>, BackendError> {
        self.alerts.update(record, revision).await
    }

    async fn get_alert(&self, job: &str, id: &str) -> Result<Option<StoredAlert>, BackendError> {
        self.alerts.get(job, id).await
    }

    async fn alerts(&self, job: Option<&str>) -> Result<Vec<StoredAlert>, BackendError> {
        self.alerts.list(job).await
    }

    async fn purge_alerts_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        self.alerts.purge_before(before).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::conformance;

    #[tokio::test]
    async fn passes_claims_conformance() {
        conformance::claims_suite(Arc::new(EmbeddedClaims::default())).await;
    }

    #[tokio::test]
    async fn request_ids_are_forgotten_beyond_the_bound() {
        let claims = EmbeddedClaims::new(DEFAULT_REQUEST_TTL, 3);
        let job = JobName::parse("j").expect("name");
        for r in ["r1", "r2", "r3", "r4"] {
            assert!(claims.claim_request(&job, r).await.expect("claim").is_some());
        }
        assert!(claims.claim_request(&job, "r4").await.expect("claim").is_none());
        assert!(claims.claim_request(&job, "r1").await.expect("claim").is_some(), "r1 was evicted");
        assert!(claims.lock().requests.len() <= 3);
    }

    #[tokio::test]
    async fn request_ids_are_forgotten_after_their_ttl() {
        let claims = EmbeddedClaims::new(Duration::from_millis(50), DEFAULT_MAX_REQUESTS);
        let job = JobName::parse("j").expect("name");
        assert!(claims.claim_request(&job, "r1").await.expect("claim").is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(claims.claim_request(&job, "r2").await.expect("claim").is_some());
        assert_eq!(claims.lock().requests.len(), 1, "r1 was forgotten");
    }

    #[tokio::test]
    async fn fences_keep_increasing_across_instances() {
        let job = JobName::parse("j").expect("name");
        let tick = Utc::now();
        let first = EmbeddedClaims::default().claim_tick(&job, tick).await.expect("claim").expect("won");
        // A restart takes longer than this.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = EmbeddedClaims::default().claim_tick(&job, tick).await.expect("claim").expect("won");
        assert!(second > first);
    }
}
