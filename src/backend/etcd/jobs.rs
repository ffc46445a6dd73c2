//! etcd job store: jobs under `jobs/<name>` (the seed's JSON is a valid job), kill and run-now
//! signals under `killer/<name>` and `run/<name>` on short leases, and one watch over them.
//!
//! Writes are compare-and-set transactions on the key's mod revision (or its absence), retried
//! after a concurrent change, so the version precondition is atomic. The job store's revision
//! is etcd's. The watch is one etcd watch over the key range `jobs/` .. `run/` (which holds
//! `killer/` and, ignored, `requests/` and the seed's `lock/`), mapped to [`Change`]s; a
//! compacted start or a watcher that fell behind ends the stream with `Compacted`, a broken
//! stream with `Unavailable`.
//!
//! Audit entries live under `audit/<13-digit ms>-<uuid>` and are written in the same txn as the
//! change they record; they sort before `jobs/`, outside the watch's range. A page of entries is
//! read newest first with a descending range read, filtered here.

use std::collections::VecDeque;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use etcd_client::{
    Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};
use futures::StreamExt;

use super::{corrupt, section, Ctx};
use crate::backend::jobs::{Change, JobSnapshot, JobStore, Precondition, PutOutcome, Signal, WatchEvent, WatchStream};
use crate::backend::BackendError;
use crate::domain::audit::{id_bound, AuditEntry};
use crate::domain::{AuditContext, AuditPage, AuditQuery, Job, JobName, Revision, RunId};

/// Lease of a kill or run-now key, seconds (the seed's master uses 1 s; etcd may round it up).
const SIGNAL_TTL_SECS: i64 = 1;
/// Most compare-and-set attempts of one write under contention.
const MAX_ATTEMPTS: usize = 64;
/// Audit entries read per request while filling a page.
const AUDIT_BATCH: i64 = 200;

/// Jobs and signals in etcd.
pub struct EtcdJobStore {
    ctx: Ctx,
}

/// A stored job as read: parsed (or why not) and the key's mod revision.
type Stored = (Result<Job, BackendError>, i64);

impl EtcdJobStore {
    pub(crate) fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    /// Counts the jobs: one cheap request.
    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        let mut client = self.ctx.client.clone();
        let options = GetOptions::new().with_prefix().with_count_only();
        let dir = self.ctx.keys.dir(section::JOBS);
        self.ctx.call("cannot read the job count", async move { client.get(dir, Some(options)).await }).await?;
        Ok(())
    }

    async fn read(&self, name: &JobName) -> Result<Option<Stored>, BackendError> {
        let mut client = self.ctx.client.clone();
        let key = self.ctx.keys.key(section::JOBS, name.as_str());
        let resp =
            self.ctx.call(&format!("cannot read job {name}"), async move { client.get(key, None).await }).await?;
        Ok(resp.kvs().first().map(|kv| (parse_job(name.as_str(), kv.value()), kv.mod_revision())))
    }

    /// Writes `ops` if the job key is still as read (`read_rev` 0 = absent); the txn's revision
    /// when it was applied.
    async fn write_if_unchanged(
        &self,
        name: &JobName,
        read_rev: Option<i64>,
        ops: Vec<TxnOp>,
    ) -> Result<Option<Revision>, BackendError> {
        let key = self.ctx.keys.key(section::JOBS, name.as_str());
        let cmp = match read_rev {
            None => Compare::create_revision(key, CompareOp::Equal, 0),
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
        };
        let mut client = self.ctx.client.clone();
        let resp =
            self.ctx
                .call(&format!("cannot write job {name}"), async move {
                    client.txn(Txn::new().when([cmp]).and_then(ops)).await
                })
                .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(resp.succeeded().then_some(Revision(revision)))
    }

    /// Puts a signal key on a short lease, with `extra` ops (an audit entry) in the same txn.
    async fn put_signal(
        &self,
        section: &str,
        job: &JobName,
        value: String,
        extra: Vec<TxnOp>,
    ) -> Result<Revision, BackendError> {
        let mut client = self.ctx.client.clone();
        let mut granter = self.ctx.client.clone();
        let lease = self
            .ctx
            .call("cannot grant a signal lease", async move { granter.lease_grant(SIGNAL_TTL_SECS, None).await })
            .await?;
        let key = self.ctx.keys.key(section, job.as_str());
        let mut ops = vec![TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease.id())))];
        ops.extend(extra);
        let resp = self
            .ctx
            .call(&format!("cannot signal job {job}"), async move { client.txn(Txn::new().and_then(ops)).await })
            .await?;
        Ok(Revision(resp.header().map_or(0, |h| h.revision())))
    }

    /// The op writing `entry` under `audit/<id>`.
    fn audit_op(&self, entry: &AuditEntry) -> Result<TxnOp, BackendError> {
        let json = serde_json::to_string(entry)
            .map_err(|e| corrupt(format!("audit entry of job {} cannot be serialized: {e}", entry.job)))?;
        Ok(TxnOp::put(self.ctx.keys.key(section::AUDIT, &entry.id), json, None))
    }

    async fn put_with(
        &self,
        job: Job,
        precondition: Precondition,
        audit: Option<&AuditContext>,
    ) -> Result<PutOutcome, BackendError> {
        let name = job.name.clone();
        let key = self.ctx.keys.key(section::JOBS, name.as_str());
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.read(&name).await?;
            let read_rev = stored.as_ref().map(|(_, rev)| *rev);
            let previous = match stored {
                None => None,
                Some((Ok(prev), _)) => Some(prev),
                // An unreadable job may be overwritten, but not compared with.
                Some((Err(e), _)) => match precondition {
                    Precondition::Any => {
                        log::warn!("Overwriting a stored job that does not parse. key={key} error={e}");
                        None
                    }
                    Precondition::Absent => return Err(BackendError::JobExists { name }),
                    Precondition::Version(_) => return Err(e),
                },
            };
            match (precondition, &previous, read_rev) {
                (Precondition::Absent, _, Some(_)) => return Err(BackendError::JobExists { name }),
                (Precondition::Version(_), None, _) => return Err(BackendError::JobNotFound { name }),
                (Precondition::Version(expected), Some(prev), _) if prev.version != expected => {
                    return Err(BackendError::VersionConflict { name, expected, found: prev.version })
                }
                _ => {}
            }
            let now = Utc::now();
            let mut stored_job = job.clone();
            stored_job.version = previous.as_ref().map_or(1, |p| p.version + 1);
            stored_job.created_at = previous.as_ref().map_or(now, |p| p.created_at);
            stored_job.updated_at = now;
            let json = serde_json::to_string(&stored_job)
                .map_err(|e| corrupt(format!("job {name} cannot be serialized: {e}")))?;
            let mut ops = vec![TxnOp::put(key.clone(), json, None)];
            if let Some(ctx) = audit {
                ops.push(self.audit_op(&ctx.entry(&name, previous.as_ref(), Some(&stored_job), now))?);
            }
            if let Some(revision) = self.write_if_unchanged(&name, read_rev, ops).await? {
                return Ok(PutOutcome { previous, job: stored_job, revision });
            }
        }
        Err(contention(&name))
    }

    async fn delete_with(
        &self,
        name: &JobName,
        expected_version: Option<u64>,
        audit: Option<&AuditContext>,
    ) -> Result<Option<Job>, BackendError> {
        let key = self.ctx.keys.key(section::JOBS, name.as_str());
        for _ in 0..MAX_ATTEMPTS {
            let (previous, read_rev) = match (self.read(name).await?, expected_version) {
                (None, None) => return Ok(None),
                (None, Some(_)) => return Err(BackendError::JobNotFound { name: name.clone() }),
                (Some((parsed, rev)), None) => match parsed {
                    Ok(prev) => (Some(prev), rev),
                    Err(e) => {
                        log::warn!("Deleting a stored job that does not parse. key={key} error={e}");
                        (None, rev)
                    }
                },
                (Some((parsed, rev)), Some(expected)) => {
                    let prev = parsed?;
                    if prev.version != expected {
                        return Err(BackendError::VersionConflict {
                            name: name.clone(),
                            expected,
                            found: prev.version,
                        });
                    }
                    (Some(prev), rev)
                }
            };
            // The claim high-water mark goes with the job.
            let mut ops = vec![
                TxnOp::delete(key.clone(), None),
                TxnOp::delete(self.ctx.keys.key(section::CLAIM, name.as_str()), None),
            ];
            if let Some(ctx) = audit {
                ops.push(self.audit_op(&ctx.entry(name, previous.as_ref(), None, Utc::now()))?);
            }
            if self.write_if_unchanged(name, Some(read_rev), ops).await?.is_some() {
                return Ok(previous);
            }
        }
        Err(contention(name))
    }

    async fn signal_with(&self, signal: Signal, extra: Vec<TxnOp>) -> Result<Revision, BackendError> {
        match signal {
            Signal::Kill { job, run } => {
                let value = run.map(|r| serde_json::json!({ "run": r }).to_string()).unwrap_or_default();
                self.put_signal(section::KILLER, &job, value, extra).await
            }
            Signal::RunNow { job, request, env, retry } => {
                self.put_signal(section::RUN, &job, encode_request(request, &env, retry.as_ref()), extra).await
            }
        }
    }
}

/// Parses and validates a stored job; the key names it (a seed job's JSON name is the same).
fn parse_job(name: &str, value: &[u8]) -> Result<Job, BackendError> {
    let name = JobName::parse(name).map_err(|e| corrupt(format!("job key {name} is not a valid name: {e}")))?;
    Job::from_stored(&name, value).map_err(|e| BackendError::InvalidStoredJob { name: e.name, reason: e.reason })
}

fn contention(name: &JobName) -> BackendError {
    BackendError::Unavailable {
        backend: super::BACKEND,
        message: format!("job {name} changed {MAX_ATTEMPTS} times while being written; try again"),
    }
}

/// The run a kill signal names: the seed writes an empty value (every run of the job); we write
/// `{"run":"<id>"}` for one run.
fn decode_kill(value: &[u8]) -> Option<RunId> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v.get("run").and_then(serde_json::Value::as_str).map(|r| RunId(r.to_owned())),
        Err(_) => Some(RunId(text.to_owned())),
    }
}

/// The request id of a run-now signal: the value itself (or `{"request":..}`).
/// The value of a run-now key: the bare request id (the seed-era shape) when the request has no
/// parameters and is not a retry, else `{"request", "env", "retry"}`.
fn encode_request(
    request: String,
    env: &std::collections::BTreeMap<String, String>,
    retry: Option<&crate::domain::RetryOf>,
) -> String {
    if env.is_empty() && retry.is_none() {
        return request;
    }
    serde_json::json!({ "request": request, "env": env, "retry": retry }).to_string()
}

/// [`decode_request`] plus the run parameters and retry of a JSON value (none for other shapes).
fn decode_run_request(
    value: &[u8],
    revision: i64,
) -> (String, std::collections::BTreeMap<String, String>, Option<crate::domain::RetryOf>) {
    let request = decode_request(value, revision);
    let json = serde_json::from_slice::<serde_json::Value>(value).ok();
    let env = json
        .as_ref()
        .and_then(|v| v.get("env"))
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    let retry = json.as_ref().and_then(|v| v.get("retry")).and_then(|r| serde_json::from_value(r.clone()).ok());
    (request, env, retry)
}

fn decode_request(value: &[u8], revision: i64) -> String {
    let text = String::from_utf8_lossy(value).trim().to_owned();
    let from_json = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("request").and_then(serde_json::Value::as_str).map(str::to_owned));
    match from_json {
        Some(r) if !r.is_empty() => r,
        _ if !text.is_empty() => text,
        // A bare key still asks for one run: the revision makes the request unique.
        _ => format!("etcd-{revision}"),
    }
}

/// Maps one etcd event to a change, or `None` for keys and deletes that are not changes.
fn decode_event(keys: &super::Keys, event: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = event.kv()?;
    let key = kv.key_str().ok()?;
    let revision = Revision(kv.mod_revision());
    let job_of = |name: &str| match JobName::parse(name) {
        Ok(job) => Some(job),
        Err(e) => {
            log::warn!("Ignoring an etcd key that does not name a valid job. key={key} error={e}");
            None
        }
    };
    let change = match event.event_type() {
        EventType::Put => {
            if let Some(name) = keys.name_in(section::JOBS, key) {
                // Issue 9, item 8: an invalid document is a change too; it stops the previous
                // definition. The scheduler logs it once.
                match Job::from_stored(&job_of(name)?, kv.value()) {
                    Ok(job) => Change::Put(job),
                    Err(invalid) => Change::Invalid(invalid),
                }
            } else if let Some(name) = keys.name_in(section::KILLER, key) {
                Change::Signal(Signal::Kill { job: job_of(name)?, run: decode_kill(kv.value()) })
            } else if let Some(name) = keys.name_in(section::RUN, key) {
                let (request, env, retry) = decode_run_request(kv.value(), revision.0);
                Change::Signal(Signal::RunNow { job: job_of(name)?, request, env, retry })
            } else {
                return None;
            }
        }
        // Deletes of signal keys are their leases expiring: not changes.
        EventType::Delete => Change::Delete(job_of(keys.name_in(section::JOBS, key)?)?),
    };
    Some(WatchEvent { revision, change })
}

#[async_trait]
impl JobStore for EtcdJobStore {
    async fn snapshot(&self) -> Result<(Vec<Job>, Revision), BackendError> {
        let snapshot = self.snapshot_checked().await?;
        Ok((snapshot.jobs, snapshot.revision))
    }

    async fn snapshot_checked(&self) -> Result<JobSnapshot, BackendError> {
        let dir = self.ctx.keys.dir(section::JOBS);
        let (kvs, revision) = self.ctx.range_all("cannot read the jobs", &dir).await?;
        let mut snapshot = JobSnapshot { jobs: Vec::new(), invalid: Vec::new(), revision: Revision(revision) };
        for kv in &kvs {
            let Some(name) = kv.key_str().ok().and_then(|key| self.ctx.keys.name_in(section::JOBS, key)) else {
                continue;
            };
            let Ok(name) = JobName::parse(name) else {
                // Not a job key distcron could ever write (nor run): left alone.
                log::debug!("Ignoring an etcd key that does not name a valid job. name={name:?}");
                continue;
            };
            snapshot.add_stored(&name, kv.value());
        }
        Ok(snapshot)
    }

    async fn get(&self, name: &JobName) -> Result<Option<Job>, BackendError> {
        self.read(name).await?.map(|(job, _)| job).transpose()
    }

    async fn put(&self, job: Job, precondition: Precondition) -> Result<PutOutcome, BackendError> {
        self.put_with(job, precondition, None).await
    }

    async fn delete(&self, name: &JobName, expected_version: Option<u64>) -> Result<Option<Job>, BackendError> {
        self.delete_with(name, expected_version, None).await
    }

    async fn signal(&self, signal: Signal) -> Result<Revision, BackendError> {
        self.signal_with(signal, Vec::new()).await
    }

    async fn put_audited(
        &self,
        job: Job,
        precondition: Precondition,
        audit: AuditContext,
    ) -> Result<PutOutcome, BackendError> {
        self.put_with(job, precondition, Some(&audit)).await
    }

    async fn delete_audited(
        &self,
        name: &JobName,
        expected_version: Option<u64>,
        audit: AuditContext,
    ) -> Result<Option<Job>, BackendError> {
        self.delete_with(name, expected_version, Some(&audit)).await
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
        let entry = audit.entry(&job, current.as_ref(), current.as_ref(), Utc::now());
        let op = self.audit_op(&entry)?;
        self.signal_with(signal, vec![op]).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, BackendError> {
        let want = query.limit.max(1) as usize + 1;
        let start = self.ctx.keys.dir(section::AUDIT);
        let mut end = match &query.before {
            Some(cursor) => self.ctx.keys.key(section::AUDIT, cursor).into_bytes(),
            None => self.ctx.keys.range_end(section::AUDIT).into_bytes(),
        };
        let client = self.ctx.client.clone();
        let mut found = Vec::new();
        while found.len() < want {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(AUDIT_BATCH);
            let (mut c, from) = (client.clone(), start.clone());
            let resp =
                self.ctx.call("cannot read the audit log", async move { c.get(from, Some(options)).await }).await?;
            let kvs = resp.kvs();
            let Some(last) = kvs.last() else { break };
            end = last.key().to_vec();
            for kv in kvs {
                match serde_json::from_slice::<AuditEntry>(kv.value()) {
                    Ok(entry) if query.matches(&entry) => found.push(entry),
                    Ok(_) => {}
                    Err(e) => log::warn!(
                        "Skipping an audit entry that does not parse. key={} error={e}",
                        String::from_utf8_lossy(kv.key())
                    ),
                }
            }
            if !resp.more() {
                break;
            }
        }
        found.truncate(want);
        Ok(AuditPage::from_overfetch(found, query.limit.max(1)))
    }

    async fn purge_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, BackendError> {
        let mut client = self.ctx.client.clone();
        let start = self.ctx.keys.dir(section::AUDIT);
        let end = self.ctx.keys.key(section::AUDIT, &id_bound(cutoff));
        let resp = self
            .ctx
            .call("cannot purge the audit log", async move {
                client.delete(start, Some(DeleteOptions::new().with_range(end))).await
            })
            .await?;
        Ok(u64::try_from(resp.deleted()).unwrap_or(0))
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, BackendError> {
        let keys = self.ctx.keys.clone();
        let start = from.0.max(1);
        let options = WatchOptions::new().with_range(keys.range_end(section::RUN)).with_start_revision(start);
        let mut client = self.ctx.client.clone();
        let dir = keys.dir(section::JOBS);
        // The first answer says whether the watch exists (or why not).
        let (stream, first) = self
            .ctx
            .call("cannot open the job watch", async move {
                let mut stream = client.watch(dir, Some(options)).await?;
                let first = stream.message().await?;
                Ok((stream, first))
            })
            .await?;
        let mut pending = VecDeque::new();
        match first {
            None => return Err(unavailable_watch("etcd closed the job watch at once".into())),
            Some(resp) if resp.compact_revision() > 0 => {
                return Err(BackendError::Compacted {
                    requested: from,
                    compacted: Revision(resp.compact_revision() - 1),
                })
            }
            Some(resp) if resp.canceled() => {
                return Err(unavailable_watch(format!("etcd refused the job watch: {}", resp.cancel_reason())))
            }
            Some(resp) => pending.extend(resp.events().iter().filter_map(|e| decode_event(&keys, e))),
        }
        struct State {
            stream: etcd_client::WatchStream,
            pending: VecDeque<WatchEvent>,
            next: i64,
            keys: super::Keys,
            done: bool,
        }
        let state = State { stream, pending, next: start, keys, done: false };
        let events = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(event) = st.pending.pop_front() {
                    st.next = event.revision.0 + 1;
                    return Some((Ok(event), st));
                }
                if st.done {
                    return None;
                }
                match st.stream.message().await {
                    Ok(Some(resp)) if resp.compact_revision() > 0 => {
                        st.done = true;
                        let error = BackendError::Compacted {
                            requested: Revision(st.next),
                            compacted: Revision(resp.compact_revision() - 1),
                        };
                        return Some((Err(error), st));
                    }
                    Ok(Some(resp)) if resp.canceled() => {
                        st.done = true;
                        let error = unavailable_watch(format!("etcd canceled the job watch: {}", resp.cancel_reason()));
                        return Some((Err(error), st));
                    }
                    Ok(Some(resp)) => {
                        let keys = st.keys.clone();
                        st.pending.extend(resp.events().iter().filter_map(|e| decode_event(&keys, e)));
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        st.done = true;
                        return Some((Err(unavailable_watch(format!("the job watch broke: {e}"))), st));
                    }
                }
            }
        });
        // Polled on the etcd I/O thread; the actor reads the events from a channel.
        Ok(self.ctx.io.forward(events.boxed()))
    }
}

fn unavailable_watch(message: String) -> BackendError {
    BackendError::Unavailable { backend: super::BACKEND, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_job_reads_as_a_seed_dialect_job_named_by_its_key() {
        let job =
            parse_job("job1", br#"{"name":"job1","command":"echo hi","cron_expr":"*/5 * * * * *"}"#).expect("parses");
        assert_eq!(job.name.as_str(), "job1");
        assert_eq!(job.dialect, crate::domain::Dialect::Seed);
        assert_eq!(job.version, 0);
        assert!(parse_job("bad name", br#"{"name":"x","command":"c","cron_expr":"* * * * *"}"#).is_err());
        assert!(parse_job("x", b"not json").is_err());
    }

    #[test]
    fn kill_values_name_one_run_or_every_run() {
        assert_eq!(decode_kill(b""), None, "the seed's empty value kills every run");
        assert_eq!(decode_kill(br#"{"run":"r1"}"#), Some(RunId("r1".into())));
        assert_eq!(decode_kill(b"r2"), Some(RunId("r2".into())));
        assert_eq!(decode_request(b"req-1", 9), "req-1");
        assert_eq!(decode_request(br#"{"request":"req-2"}"#, 9), "req-2");
        assert_eq!(decode_request(b"", 9), "etcd-9");
    }

    #[test]
    fn run_requests_carry_params_and_retries_and_stay_bare_without() {
        let none = std::collections::BTreeMap::new();
        assert_eq!(encode_request("req-1".into(), &none, None), "req-1", "the seed-era shape");
        let env: std::collections::BTreeMap<String, String> = [("TARGET".to_owned(), "eu".to_owned())].into();
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let retry = crate::domain::RetryOf { scheduled_at: at, attempt: 2, due_at: at, backfill: false };
        let value = encode_request("req-2".into(), &env, Some(&retry));
        assert_eq!(decode_run_request(value.as_bytes(), 9), ("req-2".into(), env, Some(retry)));
        assert_eq!(decode_run_request(b"req-3", 9), ("req-3".into(), none, None));
    }
}
