//! Embedded claims: tick high-water marks, run-now request claims and running marks, in
//! process memory; opened on a file ([`EmbeddedClaims::open`]) the tick high-water marks are
//! also written to SQLite (table `claims`, `claims.sqlite3` under `data_dir`) with each claim,
//! so the last claimed tick of every job survives a restart (catch-up after downtime).
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
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::alerts::AlertTable;
use super::{open_sqlite, sql_err, Durability};
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

struct State {
    /// Where tick high-water marks are persisted (`None`: memory only).
    db: Option<Connection>,
    /// Last fence handed out.
    fence: i64,
    /// Per job, the latest claimed tick in ms since the epoch.
    ticks: HashMap<JobName, i64>,
    /// Claimed (job, request) keys, with their claim order for eviction.
    requests: HashSet<(JobName, String)>,
    request_order: VecDeque<(Instant, (JobName, String))>,
    running: BTreeMap<(JobName, RunId), RunningMark>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("ticks", &self.ticks.len()).field("persisted", &self.db.is_some()).finish()
    }
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
                db: None,
                fence,
                ticks: HashMap::new(),
                requests: HashSet::new(),
                request_order: VecDeque::new(),
                running: BTreeMap::new(),
            }),
            alerts: AlertTable::in_memory().expect("an in-memory SQLite database always opens"),
        }
    }

    /// These claims with their alert records in the SQLite file at `path` (kept across
    /// restarts of the node) instead of in memory.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn with_alert_file(self, path: &Path) -> Result<Self, BackendError> {
        Ok(Self { alerts: AlertTable::open(path)?, ..self })
    }

    /// Claims whose tick high-water marks persist in the SQLite file at `path` (created when
    /// absent); the marks found there are loaded.
    ///
    /// # Errors
    /// When the file cannot be opened, created or read.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let conn = open_sqlite(path, Durability::Normal)?;
        let shown = path.display();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS claims (job TEXT PRIMARY KEY NOT NULL, tick_ms INTEGER NOT NULL)",
        )
        .map_err(sql_err(format!("cannot create table claims in {shown}")))?;
        let mut ticks = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT job, tick_ms FROM claims")
                .map_err(sql_err(format!("cannot read claims from {shown}")))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sql_err(format!("cannot read claims from {shown}")))?;
            for row in rows {
                let (job, ms) = row.map_err(sql_err(format!("cannot read claims from {shown}")))?;
                match JobName::parse(&job) {
                    Ok(name) => {
                        ticks.insert(name, ms);
                    }
                    Err(e) => log::warn!("Ignoring a claim row with an invalid job name. path={shown} error={e}"),
                }
            }
        }
        let claims = Self::default();
        {
            let mut state = claims.lock();
            state.ticks = ticks;
            state.db = Some(conn);
        }
        Ok(claims)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Records `job`'s new high-water mark: on disk first (when persisted), then in memory.
    fn set_tick(&mut self, job: &JobName, tick_ms: i64) -> Result<(), BackendError> {
        if let Some(db) = &self.db {
            db.prepare_cached(
                "INSERT INTO claims (job, tick_ms) VALUES (?1, ?2) \
                 ON CONFLICT(job) DO UPDATE SET tick_ms = max(tick_ms, excluded.tick_ms)",
            )
            .and_then(|mut stmt| stmt.execute(rusqlite::params![job.as_str(), tick_ms]))
            .map_err(sql_err(format!("cannot persist the claim of job {job}")))?;
        }
        self.ticks.insert(job.clone(), tick_ms);
        Ok(())
    }

    fn next_fence(&mut self) -> Fence {
        self.fence += 1;
        Fence(self.fence)
    }

    /// One tick claim with its mark, decided alone (see [`Claims::claim_ticks`]).
    fn claim(&mut self, r: &TickRequest) -> Result<Option<TickClaim>, BackendError> {
        let tick_ms = r.tick.timestamp_millis();
        let previous = self.ticks.get(&r.job).copied();
        let others = |state: &State, except: Option<&RunId>| -> Vec<RunningMark> {
            state.running.values().filter(|m| m.job == r.job && Some(&m.run) != except).cloned().collect()
        };
        let want_running = r.with_running || r.mark_if_idle;
        if previous.is_some_and(|mark| mark >= tick_ms) {
            // A retried claim whose first attempt won (its answer lost): its mark says so.
            let Some(mark) = r.mark.as_ref() else { return Ok(None) };
            let Some(fence) = self.running.get(&(mark.job.clone(), mark.run.clone())).and_then(|kept| kept.fence)
            else {
                return Ok(None);
            };
            let running = if want_running { others(self, Some(&mark.run)) } else { Vec::new() };
            return Ok(Some(TickClaim { fence, previous: None, running, marked: true }));
        }
        self.set_tick(&r.job, tick_ms)?;
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
        Ok(Some(TickClaim {
            fence,
            previous: previous.and_then(DateTime::from_timestamp_millis),
            running: if want_running { running } else { Vec::new() },
            marked,
        }))
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
        state.set_tick(job, tick_ms)?;
        Ok(Some(state.next_fence()))
    }

    async fn claim_tick_checked(
        &self,
        job: &JobName,
        tick: DateTime<Utc>,
        with_running: bool,
    ) -> Result<Option<TickClaim>, BackendError> {
        self.lock().claim(&TickRequest::unmarked(job.clone(), tick, with_running))
    }

    async fn claim_ticks(&self, requests: &[TickRequest]) -> Vec<Result<Option<TickClaim>, BackendError>> {
        let mut state = self.lock();
        requests.iter().map(|r| state.claim(r)).collect()
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

    async fn last_ticks(&self) -> Result<HashMap<JobName, DateTime<Utc>>, BackendError> {
        let state = self.lock();
        Ok(state
            .ticks
            .iter()
            .filter_map(|(job, ms)| Some((job.clone(), DateTime::from_timestamp_millis(*ms)?)))
            .collect())
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
    async fn passes_claims_conformance_on_a_file_and_keeps_last_ticks_across_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("claims.sqlite3");
        conformance::claims_suite(Arc::new(EmbeddedClaims::open(&path).expect("open"))).await;
        conformance::last_ticks_survive_reopen(|| async {
            let claims: Arc<dyn Claims> = Arc::new(EmbeddedClaims::open(&path).expect("reopen"));
            claims
        })
        .await;
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
