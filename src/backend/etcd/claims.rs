//! etcd claims: the per-job tick high-water mark, run-now request claims, running marks, a
//! claim cache for non-owners, and the detection of runs lost with their worker.
//!
//! - A tick claim is one txn on `claim/<name>`: `value < T` (or, nested, key absent) → put T
//!   (ARCHITECTURE.md "Claims, spread and failover"); the same txn returns the previous value and,
//!   when asked, the job's running marks, and puts the run's running mark on the session lease
//!   (under `forbid` only when the job has no live run), so the hot path is one round trip and
//!   a claimed tick is never without its mark. The fence is the txn's revision (and the mark
//!   key's create revision). A batch is one txn of nested txns per [`CLAIMS_PER_TXN`] claims.
//!   Claims are refused while the worker's session is lost.
//! - A run-now request (or a lost-run record) is claimed by creating `requests/<name>/<id>` on
//!   a shared lease of about two hours: it succeeds once per id.
//! - Running marks are `running/<name>/<run>` on the session lease.
//! - [`EtcdClaims::known_claim`] reads a cache of `claim/` fed by a background watch, so a
//!   worker that is not a job's owner can skip a claim that would fail without asking etcd.
//! - [`EtcdClaims::watch_lost`] watches `running/` and `workers/` with previous values: marks
//!   deleted in the same revision as a worker key on the same lease went with an expired (or
//!   revoked) session, not with a finished run.
//! - An alert is claimed by creating `alerts/<job>/<alert id>` (no lease: the record is the
//!   alert's history, purged by age); its deliveries are recorded with a txn comparing the
//!   key's mod revision.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use futures::StreamExt;

use super::session::Session;
use super::{corrupt, section, tick_value, Ctx, Keys};
use crate::backend::claims::{Claims, LostStream, RunningMark, StoredAlert, TickClaim, TickRequest};
use crate::backend::BackendError;
use crate::domain::{AlertRecord, Fence, JobName, RunId};

/// Lease of claimed request ids, seconds; a new lease is granted every half of it.
const REQUEST_TTL_SECS: i64 = 2 * 3600;
/// Pause before a broken background watch is opened again.
const REWATCH_DELAY: Duration = Duration::from_secs(1);
/// Claims per batched txn: etcd allows 128 ops per txn level, nested levels get what the outer
/// level leaves (`--max-txn-ops` minus its own ops).
const CLAIMS_PER_TXN: usize = 48;
/// Puts or deletes of marks per txn (etcd's default `--max-txn-ops` is 128).
const OPS_PER_TXN: usize = 100;

/// Claims in etcd.
pub struct EtcdClaims {
    ctx: Ctx,
    session: Arc<Session>,
    request_lease: Mutex<Option<(i64, Instant)>>,
    cache: Arc<Mutex<ClaimCache>>,
}

#[derive(Default)]
struct ClaimCache {
    /// Last claimed tick (ms) per job name, as last seen.
    ticks: HashMap<String, i64>,
    follower: Option<tokio::task::AbortHandle>,
}

impl EtcdClaims {
    pub(crate) fn new(ctx: Ctx, session: Arc<Session>) -> Self {
        Self { ctx, session, request_lease: Mutex::new(None), cache: Arc::new(Mutex::new(ClaimCache::default())) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ClaimCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note_claim(&self, job: &str, ms: i64) {
        let mut cache = self.cache();
        let entry = cache.ticks.entry(job.to_owned()).or_insert(ms);
        *entry = (*entry).max(ms);
    }

    async fn request_lease(&self) -> Result<i64, BackendError> {
        let current = *self.request_lease.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((id, at)) = current {
            if at.elapsed() < Duration::from_secs((REQUEST_TTL_SECS / 2) as u64) {
                return Ok(id);
            }
        }
        let mut client = self.ctx.client.clone();
        let granted = self
            .ctx
            .call("cannot grant the request lease", async move { client.lease_grant(REQUEST_TTL_SECS, None).await })
            .await?;
        *self.request_lease.lock().unwrap_or_else(PoisonError::into_inner) = Some((granted.id(), Instant::now()));
        Ok(granted.id())
    }

    fn running_dir(&self, job: Option<&JobName>) -> String {
        match job {
            Some(job) => format!("{}{}/", self.ctx.keys.dir(section::RUNNING), job.as_str()),
            None => self.ctx.keys.dir(section::RUNNING),
        }
    }

    fn alert_key(&self, job: &str, id: &str) -> String {
        format!("{}{job}/{id}", self.ctx.keys.dir(section::ALERTS))
    }

    fn alert_json(record: &AlertRecord) -> Result<String, BackendError> {
        serde_json::to_string(record)
            .map_err(|e| corrupt(format!("alert record {} cannot be serialized: {e}", record.alert.id)))
    }

    fn refuse_while_lost(&self) -> Result<(), BackendError> {
        if self.session.is_lost() {
            return Err(BackendError::Unavailable {
                backend: super::BACKEND,
                message: "this worker's etcd session is lost; it claims nothing until it has a new one".into(),
            });
        }
        Ok(())
    }

    /// The claim of one tick as a txn: `value < T` → put T (and read the live runs, and put the
    /// run's mark on the session lease); on an absent key (etcd compares a missing value as
    /// false) a nested txn does the first claim. When the claim is refused and a mark is
    /// given, the mark is read back: present, it proves that an earlier attempt with this mark
    /// won (its answer lost), and the claim is answered as won.
    ///
    /// Nesting (etcd evaluates every compare of a txn tree before it applies any op): the mark
    /// put is its own nested txn, guarded under `forbid` by "no key under `running/<job>/`", so
    /// the decision to skip is taken on the same revision as the claim.
    fn claim_txn(&self, r: &TickRequest, lease: i64) -> Result<Txn, BackendError> {
        let key = self.ctx.keys.key(section::CLAIM, r.job.as_str());
        let value = tick_value(r.tick.timestamp_millis());
        let dir = self.running_dir(Some(&r.job));
        let read_running = TxnOp::get(dir.clone(), Some(GetOptions::new().with_prefix()));
        let mut ops = vec![TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_prev_key()))];
        if r.with_running || r.mark_if_idle {
            ops.push(read_running.clone());
        }
        let mut refused = Vec::new();
        if let Some(mark) = &r.mark {
            let mark_key = format!("{dir}{}", mark.run);
            let mut stored = mark.clone();
            // The fence is the revision of this very txn: read back from the key's create revision.
            stored.fence = None;
            let json = serde_json::to_string(&stored).map_err(|e| corrupt(format!("running mark: {e}")))?;
            let put = TxnOp::put(mark_key.clone(), json, Some(PutOptions::new().with_lease(lease)));
            let idle: Vec<Compare> = if r.mark_if_idle {
                vec![Compare::create_revision(dir.clone(), CompareOp::Equal, 0).with_range(super::prefix_end(&dir))]
            } else {
                Vec::new()
            };
            ops.push(TxnOp::txn(Txn::new().when(idle).and_then([put])));
            refused.push(TxnOp::txn(Txn::new().and_then([TxnOp::get(mark_key, None), read_running])));
        }
        let first = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then(ops.clone())
            .or_else(refused);
        Ok(Txn::new().when([Compare::value(key, CompareOp::Less, value)]).and_then(ops).or_else([TxnOp::txn(first)]))
    }

    /// Reads the answer to [`Self::claim_txn`]; `revision` is the store revision of the write.
    fn read_claim(&self, r: &TickRequest, resp: &TxnResponse, revision: i64) -> Option<TickClaim> {
        self.note_claim(r.job.as_str(), r.tick.timestamp_millis());
        let responses = if resp.succeeded() {
            resp.op_responses()
        } else {
            match resp.op_responses().into_iter().next() {
                Some(TxnOpResponse::Txn(inner)) if inner.succeeded() => inner.op_responses(),
                Some(TxnOpResponse::Txn(inner)) => return self.read_refused(r, &inner),
                _ => return None,
            }
        };
        let mut claim = TickClaim { fence: Fence(revision), previous: None, running: Vec::new(), marked: false };
        for op in responses {
            match op {
                TxnOpResponse::Put(put) => {
                    claim.previous =
                        put.prev_key().and_then(|kv| parse_tick(kv.value())).and_then(DateTime::from_timestamp_millis);
                }
                TxnOpResponse::Get(get) if r.with_running => {
                    claim.running = get.kvs().iter().filter_map(parse_kv).collect()
                }
                TxnOpResponse::Txn(mark) => claim.marked = mark.succeeded(),
                _ => {}
            }
        }
        Some(claim)
    }

    /// A refused claim with a mark: won after all when the mark is there (an earlier attempt
    /// committed and its answer was lost).
    fn read_refused(&self, r: &TickRequest, inner: &TxnResponse) -> Option<TickClaim> {
        let mark = r.mark.as_ref()?;
        let Some(TxnOpResponse::Txn(reads)) = inner.op_responses().into_iter().next() else { return None };
        let mut answers = reads.op_responses().into_iter();
        let Some(TxnOpResponse::Get(own)) = answers.next() else { return None };
        let kept = own.kvs().first()?;
        let running = match answers.next() {
            Some(TxnOpResponse::Get(all)) if r.with_running => {
                all.kvs().iter().filter_map(parse_kv).filter(|m| m.run != mark.run).collect()
            }
            _ => Vec::new(),
        };
        log::debug!("A claim whose answer was lost had won; its run goes on. job={} run={}", r.job, mark.run);
        Some(TickClaim { fence: Fence(kept.create_revision()), previous: None, running, marked: true })
    }

    /// Up to [`CLAIMS_PER_TXN`] claims as one txn of nested txns, each decided on its own.
    async fn claim_chunk(&self, chunk: &[TickRequest]) -> Vec<Result<Option<TickClaim>, BackendError>> {
        let failed = |e: &BackendError| {
            chunk
                .iter()
                .map(|_| Err(BackendError::Unavailable { backend: super::BACKEND, message: e.to_string() }))
                .collect()
        };
        if let Err(e) = self.refuse_while_lost() {
            return failed(&e);
        }
        // The marks go on the session lease (granted here on first use).
        let lease = if chunk.iter().any(|r| r.mark.is_some()) {
            match self.session.lease().await {
                Ok(lease) => lease,
                Err(e) => return failed(&e),
            }
        } else {
            0
        };
        let mut nested = Vec::with_capacity(chunk.len());
        for r in chunk {
            match self.claim_txn(r, lease) {
                Ok(txn) => nested.push(TxnOp::txn(txn)),
                Err(e) => return failed(&e),
            }
        }
        let mut client = self.ctx.client.clone();
        let resp = match self
            .ctx
            .call("cannot claim ticks", async move { client.txn(Txn::new().and_then(nested)).await })
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                if lease != 0 {
                    self.session.check_lease_gone(lease, &e);
                }
                return failed(&e);
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        let answers = resp.op_responses();
        chunk
            .iter()
            .enumerate()
            .map(|(i, r)| match answers.get(i) {
                Some(TxnOpResponse::Txn(inner)) => Ok(self.read_claim(r, inner, revision)),
                _ => Err(corrupt(format!(
                    "etcd answered a batch of {} claims with {} answers",
                    chunk.len(),
                    answers.len()
                ))),
            })
            .collect()
    }

    /// Starts following `claim/` (once).
    fn follow_claims(&self) {
        let mut cache = self.cache();
        if cache.follower.is_some() {
            return;
        }
        let handle = self.ctx.io.spawn(follow(self.ctx.clone(), Arc::downgrade(&self.cache))).abort_handle();
        cache.follower = Some(handle);
    }
}

impl Drop for EtcdClaims {
    fn drop(&mut self) {
        if let Some(follower) = self.cache().follower.take() {
            follower.abort();
        }
    }
}

fn parse_mark(value: &[u8]) -> Option<RunningMark> {
    match serde_json::from_slice(value) {
        Ok(mark) => Some(mark),
        Err(e) => {
            log::warn!("Skipping a running mark that does not parse. error={e}");
            None
        }
    }
}

/// A mark as stored: a mark written with its claim holds no fence; its key's create revision
/// (the claim txn's revision) is that fence.
fn parse_kv(kv: &etcd_client::KeyValue) -> Option<RunningMark> {
    let mut mark = parse_mark(kv.value())?;
    mark.fence.get_or_insert(Fence(kv.create_revision()));
    Some(mark)
}

fn parse_tick(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Keeps `cache` equal to `claim/`: a snapshot, then a watch; on any failure the cache is
/// emptied (unknown, so callers claim) and rebuilt.
async fn follow(ctx: Ctx, cache: Weak<Mutex<ClaimCache>>) {
    let dir = ctx.keys.dir(section::CLAIM);
    loop {
        let result: Result<(), BackendError> = async {
            let mut client = ctx.client.clone();
            let (kvs, revision) = ctx.range_all("cannot read the claims", &dir).await?;
            let ticks: HashMap<String, i64> = kvs
                .iter()
                .filter_map(|kv| {
                    let name = ctx.keys.name_in(section::CLAIM, kv.key_str().ok()?)?;
                    Some((name.to_owned(), parse_tick(kv.value())?))
                })
                .collect();
            let Some(cache_ref) = cache.upgrade() else { return Ok(()) };
            cache_ref.lock().unwrap_or_else(PoisonError::into_inner).ticks = ticks;
            drop(cache_ref);
            let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let watch_dir = dir.clone();
            let mut stream = ctx
                .call("cannot watch the claims", async move { client.watch(watch_dir, Some(options)).await })
                .await?;
            loop {
                let resp = match stream.message().await {
                    Ok(Some(resp)) => resp,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(super::unavailable("the claim watch broke".into(), &e)),
                };
                if resp.compact_revision() > 0 || resp.canceled() {
                    return Ok(());
                }
                let Some(cache_ref) = cache.upgrade() else { return Ok(()) };
                let mut cache = cache_ref.lock().unwrap_or_else(PoisonError::into_inner);
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Some(name) = kv.key_str().ok().and_then(|k| ctx.keys.name_in(section::CLAIM, k)) else {
                        continue;
                    };
                    match event.event_type() {
                        EventType::Put => {
                            if let Some(ms) = parse_tick(kv.value()) {
                                let entry = cache.ticks.entry(name.to_owned()).or_insert(ms);
                                *entry = (*entry).max(ms);
                            }
                        }
                        EventType::Delete => {
                            cache.ticks.remove(name);
                        }
                    }
                }
            }
        }
        .await;
        let Some(cache_ref) = cache.upgrade() else { return };
        cache_ref.lock().unwrap_or_else(PoisonError::into_inner).ticks.clear();
        drop(cache_ref);
        if let Err(e) = result {
            log::debug!("Claim cache watch failed; claims go to etcd until it is back. error={e}");
        }
        tokio::time::sleep(REWATCH_DELAY).await;
    }
}

#[async_trait]
impl Claims for EtcdClaims {
    async fn claim_tick(&self, job: &JobName, tick: DateTime<Utc>) -> Result<Option<Fence>, BackendError> {
        Ok(self.claim_tick_checked(job, tick, false).await?.map(|c| c.fence))
    }

    async fn claim_tick_checked(
        &self,
        job: &JobName,
        tick: DateTime<Utc>,
        with_running: bool,
    ) -> Result<Option<TickClaim>, BackendError> {
        self.refuse_while_lost()?;
        let request = TickRequest::unmarked(job.clone(), tick, with_running);
        let txn = self.claim_txn(&request, 0)?;
        let mut client = self.ctx.client.clone();
        let resp =
            self.ctx.call(&format!("cannot claim a tick of job {job}"), async move { client.txn(txn).await }).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(self.read_claim(&request, &resp, revision))
    }

    async fn claim_ticks(&self, requests: &[TickRequest]) -> Vec<Result<Option<TickClaim>, BackendError>> {
        let mut out = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(CLAIMS_PER_TXN) {
            out.extend(self.claim_chunk(chunk).await);
        }
        out
    }

    async fn mark_running_many(&self, marks: &[RunningMark]) -> Result<(), BackendError> {
        if marks.is_empty() {
            return Ok(());
        }
        let lease = self.session.lease().await?;
        for chunk in marks.chunks(OPS_PER_TXN) {
            let mut ops = Vec::with_capacity(chunk.len());
            for mark in chunk {
                let key = format!("{}{}", self.running_dir(Some(&mark.job)), mark.run);
                let json = serde_json::to_string(mark).map_err(|e| corrupt(format!("running mark: {e}")))?;
                ops.push(TxnOp::put(key, json, Some(PutOptions::new().with_lease(lease))));
            }
            let mut client = self.ctx.client.clone();
            let res = self
                .ctx
                .call("cannot publish running marks", async move { client.txn(Txn::new().and_then(ops)).await })
                .await;
            if let Err(e) = &res {
                self.session.check_lease_gone(lease, e);
            }
            res?;
        }
        Ok(())
    }

    async fn clear_running_many(&self, runs: &[(JobName, RunId)]) -> Result<(), BackendError> {
        for chunk in runs.chunks(OPS_PER_TXN) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(job, run)| TxnOp::delete(format!("{}{run}", self.running_dir(Some(job))), None))
                .collect();
            let mut client = self.ctx.client.clone();
            self.ctx
                .call("cannot clear running marks", async move { client.txn(Txn::new().and_then(ops)).await })
                .await?;
        }
        Ok(())
    }

    async fn claim_request(&self, job: &JobName, request: &str) -> Result<Option<Fence>, BackendError> {
        let key = format!("{}{}/{request}", self.ctx.keys.dir(section::REQUESTS), job.as_str());
        for attempt in 0..2 {
            let lease = self.request_lease().await?;
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), "", Some(PutOptions::new().with_lease(lease)))]);
            let mut client = self.ctx.client.clone();
            match self
                .ctx
                .call(&format!("cannot claim a request of job {job}"), async move { client.txn(txn).await })
                .await
            {
                Ok(resp) => {
                    let revision = resp.header().map_or(0, |h| h.revision());
                    return Ok(resp.succeeded().then_some(Fence(revision)));
                }
                // etcd lost the shared lease (e.g. restored from a snapshot): grant another once.
                Err(e) if attempt == 0 && e.to_string().contains("lease not found") => {
                    *self.request_lease.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(corrupt("unreachable: the request claim loop ended".into()))
    }

    async fn claim_alert(&self, record: &AlertRecord) -> Result<Option<i64>, BackendError> {
        let key = self.alert_key(record.job_segment(), &record.alert.id);
        let json = Self::alert_json(record)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, json, None)]);
        let mut client = self.ctx.client.clone();
        let resp = self
            .ctx
            .call(&format!("cannot claim alert {}", record.alert.id), async move { client.txn(txn).await })
            .await?;
        Ok(resp.succeeded().then(|| resp.header().map_or(0, |h| h.revision())))
    }

    async fn update_alert(&self, record: &AlertRecord, revision: i64) -> Result<Option<i64>, BackendError> {
        let key = self.alert_key(record.job_segment(), &record.alert.id);
        let json = Self::alert_json(record)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, json, None)]);
        let mut client = self.ctx.client.clone();
        let resp =
            self.ctx
                .call(&format!("cannot record a delivery of alert {}", record.alert.id), async move {
                    client.txn(txn).await
                })
                .await?;
        Ok(resp.succeeded().then(|| resp.header().map_or(0, |h| h.revision())))
    }

    async fn get_alert(&self, job: &str, id: &str) -> Result<Option<StoredAlert>, BackendError> {
        let key = self.alert_key(job, id);
        let mut client = self.ctx.client.clone();
        let mut resp =
            self.ctx.call(&format!("cannot read alert {id}"), async move { client.get(key, None).await }).await?;
        let Some(kv) = resp.take_kvs().into_iter().next() else { return Ok(None) };
        let record = serde_json::from_slice(kv.value()).map_err(|e| corrupt(format!("alert record {id}: {e}")))?;
        Ok(Some(StoredAlert { record, revision: kv.mod_revision() }))
    }

    async fn alerts(&self, job: Option<&str>) -> Result<Vec<StoredAlert>, BackendError> {
        let dir = match job {
            Some(job) => format!("{}{job}/", self.ctx.keys.dir(section::ALERTS)),
            None => self.ctx.keys.dir(section::ALERTS),
        };
        let (kvs, _) = self.ctx.range_all("cannot list alerts", &dir).await?;
        let mut out: Vec<StoredAlert> = kvs
            .iter()
            .filter_map(|kv| match serde_json::from_slice::<AlertRecord>(kv.value()) {
                Ok(record) => Some(StoredAlert { record, revision: kv.mod_revision() }),
                Err(e) => {
                    log::warn!(
                        "Skipping an unreadable alert record. key={} error={e}",
                        String::from_utf8_lossy(kv.key())
                    );
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (b.record.alert.raised_at, &b.record.alert.id).cmp(&(a.record.alert.raised_at, &a.record.alert.id))
        });
        Ok(out)
    }

    async fn purge_alerts_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let dir = self.ctx.keys.dir(section::ALERTS);
        let (kvs, _) = self.ctx.range_all("cannot list alerts to purge", &dir).await?;
        // Compare each key's revision so a record updated since the read is kept.
        let old: Vec<(Vec<u8>, i64)> = kvs
            .iter()
            .filter(|kv| serde_json::from_slice::<AlertRecord>(kv.value()).map_or(true, |r| r.updated_at < before))
            .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
            .collect();
        let mut deleted = 0;
        for (key, revision) in old {
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::delete(key, None)]);
            let mut client = self.ctx.client.clone();
            let resp = self.ctx.call("cannot purge alerts", async move { client.txn(txn).await }).await?;
            deleted += u64::from(resp.succeeded());
        }
        Ok(deleted)
    }

    async fn mark_running(&self, mark: &RunningMark) -> Result<(), BackendError> {
        let lease = self.session.lease().await?;
        let key = format!("{}{}", self.running_dir(Some(&mark.job)), mark.run);
        let json = serde_json::to_string(mark).map_err(|e| corrupt(format!("running mark: {e}")))?;
        let mut client = self.ctx.client.clone();
        let res = self
            .ctx
            .call(&format!("cannot mark run {} running", mark.run), async move {
                client.put(key, json, Some(PutOptions::new().with_lease(lease))).await
            })
            .await;
        if let Err(e) = &res {
            self.session.check_lease_gone(lease, e);
        }
        res.map(|_| ())
    }

    async fn clear_running(&self, job: &JobName, run: &RunId) -> Result<(), BackendError> {
        let key = format!("{}{run}", self.running_dir(Some(job)));
        let mut client = self.ctx.client.clone();
        self.ctx
            .call(&format!("cannot clear the mark of run {run}"), async move { client.delete(key, None).await })
            .await
            .map(|_| ())
    }

    async fn running(&self, job: Option<&JobName>) -> Result<Vec<RunningMark>, BackendError> {
        let (kvs, _) = self.ctx.range_all("cannot list running marks", &self.running_dir(job)).await?;
        Ok(kvs.iter().filter_map(parse_kv).collect())
    }

    async fn last_ticks(&self) -> Result<HashMap<JobName, DateTime<Utc>>, BackendError> {
        let dir = self.ctx.keys.dir(section::CLAIM);
        let (kvs, _) = self.ctx.range_all("cannot read the claims", &dir).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let name = self.ctx.keys.name_in(section::CLAIM, kv.key_str().ok()?)?;
                let job = JobName::parse(name).ok()?;
                Some((job, DateTime::from_timestamp_millis(parse_tick(kv.value())?)?))
            })
            .collect())
    }

    fn known_claim(&self, job: &JobName) -> Option<DateTime<Utc>> {
        self.follow_claims();
        let ms = *self.cache().ticks.get(job.as_str())?;
        DateTime::from_timestamp_millis(ms)
    }

    async fn watch_lost(&self) -> Result<LostStream, BackendError> {
        let state =
            LostWatch { ctx: self.ctx.clone(), next: None, stream: None, pending: VecDeque::new(), failing: false };
        let marks = futures::stream::unfold(state, |mut st| async move {
            let mark = st.next_mark().await;
            Some((mark, st))
        })
        .boxed();
        Ok(self.ctx.io.forward(marks))
    }
}

/// The state of a lost-run watch: where to resume, the open stream, marks not yet handed out.
struct LostWatch {
    ctx: Ctx,
    next: Option<i64>,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<RunningMark>,
    failing: bool,
}

impl LostWatch {
    /// The next lost mark; reconnects (from the last revision seen) as long as it takes.
    async fn next_mark(&mut self) -> RunningMark {
        loop {
            if let Some(mark) = self.pending.pop_front() {
                return mark;
            }
            if self.stream.is_none() {
                match self.open().await {
                    Ok(stream) => {
                        if self.failing {
                            log::info!("Lost-run watch reconnected.");
                        }
                        self.failing = false;
                        self.stream = Some(stream);
                    }
                    Err(e) => {
                        if !self.failing {
                            log::warn!("Cannot watch for lost runs; retrying. error={e}");
                        }
                        self.failing = true;
                        tokio::time::sleep(REWATCH_DELAY).await;
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            match stream.message().await {
                Ok(Some(resp)) if resp.compact_revision() > 0 => {
                    log::warn!("Lost-run watch fell behind etcd compaction; runs lost meanwhile are found by their worker at restart. compact_revision={}", resp.compact_revision());
                    self.next = None;
                    self.stream = None;
                }
                Ok(Some(resp)) if resp.canceled() => self.stream = None,
                Ok(Some(resp)) => {
                    if let Some(last) = resp.events().iter().filter_map(|e| e.kv().map(|kv| kv.mod_revision())).max() {
                        self.next = Some(last + 1);
                    }
                    self.pending.extend(lost_marks(&self.ctx.keys, resp.events()));
                }
                Ok(None) | Err(_) => {
                    self.stream = None;
                    tokio::time::sleep(REWATCH_DELAY).await;
                }
            }
        }
    }

    async fn open(&mut self) -> Result<etcd_client::WatchStream, BackendError> {
        let from = match self.next {
            Some(rev) => rev,
            None => {
                let options = GetOptions::new().with_count_only();
                let mut client = self.ctx.client.clone();
                let dir = self.ctx.keys.dir(section::RUNNING);
                let resp = self
                    .ctx
                    .call("cannot read the etcd revision", async move { client.get(dir, Some(options)).await })
                    .await?;
                resp.header().map_or(0, |h| h.revision()) + 1
            }
        };
        self.next = Some(from);
        let keys = &self.ctx.keys;
        // `running/` .. `workers/` (nothing of ours sorts between them).
        let options =
            WatchOptions::new().with_range(keys.range_end(section::WORKERS)).with_start_revision(from).with_prev_key();
        let (mut client, dir) = (self.ctx.client.clone(), keys.dir(section::RUNNING));
        self.ctx.call("cannot watch for lost runs", async move { client.watch(dir, Some(options)).await }).await
    }
}

/// What one revision deleted: the leases of worker keys, and marks with their lease.
#[derive(Default)]
struct Deleted {
    worker_leases: HashSet<i64>,
    marks: Vec<(i64, RunningMark)>,
}

/// Marks deleted in the same revision as a worker key on the same lease: the session expired
/// (or was revoked) with these runs on it.
fn lost_marks(keys: &Keys, events: &[etcd_client::Event]) -> Vec<RunningMark> {
    let mut by_revision: BTreeMap<i64, Deleted> = BTreeMap::new();
    for event in events {
        if event.event_type() != EventType::Delete {
            continue;
        }
        let (Some(kv), Some(prev)) = (event.kv(), event.prev_kv()) else { continue };
        let Ok(key) = kv.key_str() else { continue };
        let entry = by_revision.entry(kv.mod_revision()).or_default();
        if keys.name_in(section::WORKERS, key).is_some() && prev.lease() != 0 {
            entry.worker_leases.insert(prev.lease());
        } else if keys.name_in(section::RUNNING, key).is_some() && prev.lease() != 0 {
            if let Some(mark) = parse_kv(prev) {
                entry.marks.push((prev.lease(), mark));
            }
        }
    }
    by_revision
        .into_values()
        .flat_map(|d| {
            let leases = d.worker_leases;
            d.marks.into_iter().filter(move |(lease, _)| leases.contains(lease)).map(|(_, m)| m)
        })
        .collect()
}
