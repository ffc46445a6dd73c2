//! The MongoDB log store: one document per run, the seed's fields plus ours, written in
//! idempotent batches and read back by the API, including documents the seed wrote.
//!
//! Document (README "Seed compatibility" and "Run log in MongoDB"; times are int64 ms since the epoch):
//!
//! | field | type | from |
//! | --- | --- | --- |
//! | `_id` | string | run id (UUIDv7 text); the seed's documents have an ObjectId |
//! | `jobName`, `command`, `err`, `output` | string | seed fields |
//! | `planTime`, `scheduleTime`, `startTime`, `endTime` | int64 | seed fields (`endTime` 0 while running) |
//! | `status`, `trigger`, `worker` | string | ours |
//! | `startedAt` | int64 or null | ours: null when the process never started |
//! | `exitCode`, `signal` | int32 or null | ours |
//! | `durationMs` | int64 or null | ours |
//! | `attempt` | int32, `fence` int64, `outputBytes` int64, `outputTruncated` bool | ours |
//! | `jobVersion` | int64 or null: the job definition's version the run ran | ours |
//! | `pgid` | int32, `procStartTicks` int64: the live run's process group and its start time (`/proc`), absent once unknown | ours |
//! | `expireAt` | date | ours, only when the run's retention is finite (TTL index) |
//!
//! A seed document (no `status`) reads as `succeeded` when `err` is empty, else `failed`, with
//! trigger `schedule`, no worker, attempt 1, and its ObjectId in hex as run id.
//!
//! Writes: a batch is first collapsed per run id in slice order (a final record wins over a
//! `running` one, a later final over an earlier), so a run that starts and ends within one
//! batch is one document. All records go in one unordered `insert_many` (one round trip). A
//! duplicate key means the run is already stored: for a `running` record that is success (it
//! never replaces anything, so a late retry cannot resurrect a finished run); a final record
//! then replaces the stored document (its `running` state, or an earlier final one) through an
//! unordered `update` commands of replacement upserts by `_id`, [`MAX_STATEMENTS`] per command
//! and [`UPDATES_IN_FLIGHT`] commands at once — needed only for runs whose `running` record an
//! earlier batch wrote. The driver's `bulk_write` would do both in one command but needs
//! MongoDB 8's `bulkWrite`, which FerretDB 1.x and older servers lack; `update` with several
//! statements works everywhere. Its cost per statement grows with the statements per command on
//! FerretDB 1.24 (measured: 1.1 ms at 1, 2.3 ms at 10, 4 ms at 50, and a 100-statement command
//! can take over 10 s on an indexed collection), hence the small commands. Per-document errors
//! that a retry may cure fail the whole batch (retried; idempotent); others come back as
//! [`BackendError::Rejected`].
//!
//! Reads: listings project `output` away (a summary's `output` is empty; `outputBytes` says how
//! large it is, 0 for the seed's documents, which lack it); one run's output is read by id.
//! The newest run of many jobs is one aggregation (`$match`, `$sort` on the
//! `{jobName, startTime}` index, `$group` with `$first`), in chunks of [`LAST_RUNS_CHUNK`]
//! names; stats are a `$group` aggregation for the counts plus one sorted read each for the
//! last success, the last failure and each percentile. Where the server does not implement an aggregation
//! (older FerretDB releases), the adapter says so once and falls back to per-job queries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::{Collection, Database};

use super::{codes, unavailable, Shared, BACKEND};
use crate::backend::logs::{
    failure_statuses, percentile_index, utf8_prefix, BucketBuilder, JobStats, LogStore, RetentionPolicy, RunBucket,
    RunCursor, RunFilter, RunPage, RunPoint, RunQuery, StatsBuilder,
};
use crate::backend::{BackendError, RejectedRun};
use crate::domain::{Fence, JobName, RunId, RunRecord, RunStatus, Trigger, WorkerId};

/// Most runs per page (as the embedded store).
const MAX_PAGE: u32 = 1000;
/// Output kept in one document: MongoDB refuses documents over 16 MiB.
pub const MAX_DOC_OUTPUT_BYTES: usize = 15 * 1024 * 1024;
/// Statements per `update` command (FerretDB 1.24 slows down sharply with more).
pub const MAX_STATEMENTS: usize = 10;
/// `update` commands of one batch in flight at once.
pub const UPDATES_IN_FLIGHT: usize = 4;
/// Job names per last-runs aggregation.
pub const LAST_RUNS_CHUNK: usize = 1000;
/// Estimated bytes per `update` command (the server's limit is 16 MiB + 16 KiB).
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;

/// Run records in a MongoDB (or MongoDB-wire) collection.
#[derive(Debug, Clone)]
pub struct MongoLogStore {
    db: Database,
    coll: Collection<Document>,
    shared: Arc<Shared>,
    /// Set once the server refused the last-runs aggregation (logged once): per-job queries.
    no_last_runs_aggregation: Arc<std::sync::atomic::AtomicBool>,
    /// Set once the server refused the stats aggregation (logged once): streamed stats.
    no_stats_aggregation: Arc<std::sync::atomic::AtomicBool>,
    /// What the server said when it refused.
    refusal: Arc<std::sync::OnceLock<String>>,
}

impl MongoLogStore {
    pub(super) fn new(db: Database, coll: Collection<Document>, shared: Arc<Shared>) -> Self {
        Self {
            db,
            coll,
            shared,
            no_last_runs_aggregation: Arc::default(),
            no_stats_aggregation: Arc::default(),
            refusal: Arc::default(),
        }
    }

    /// What the server said, once it refused an aggregation (reads then fall back to per-job
    /// queries).
    pub fn aggregations_refused(&self) -> Option<&str> {
        self.refusal.get().map(String::as_str)
    }

    /// Whether `e` is the server refusing an aggregation it does not implement; logs that once.
    fn refused_aggregation(&self, e: &mongodb::error::Error, what: &str, flag: &std::sync::atomic::AtomicBool) -> bool {
        let ErrorKind::Command(command) = e.kind.as_ref() else { return false };
        let _ = self.refusal.set(format!("{what}: code {} {}", command.code, command.message));
        if !flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log::warn!(
                "MongoDB server refused an aggregation, reading per job instead. what={what} code={} error={}",
                command.code,
                command.message
            );
        }
        true
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(super) fn collection(&self) -> &Collection<Document> {
        &self.coll
    }

    fn expire_at(&self, r: &RunRecord) -> Option<DateTime<Utc>> {
        let days = match self.shared.policy.read() {
            Ok(p) => p.days_for(&r.job),
            Err(poisoned) => poisoned.into_inner().days_for(&r.job),
        };
        (days > 0).then(|| r.start_time() + chrono::Duration::days(i64::from(days)))
    }

    /// Every record: one unordered insert. Returns the refused records and the final records
    /// whose run is already stored (duplicate key), to replace.
    async fn insert_new<'r>(
        &self,
        records: &[&'r RunRecord],
    ) -> Result<(Vec<RejectedRun>, Vec<&'r RunRecord>), BackendError> {
        if records.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let docs: Vec<Document> = records.iter().map(|r| to_document(r, self.expire_at(r))).collect();
        match self.coll.insert_many(docs).ordered(false).await {
            Ok(_) => Ok((Vec::new(), Vec::new())),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(failure) => {
                    if let Some(wce) = &failure.write_concern_error {
                        return Err(unavailable("write concern not satisfied", &wce.message));
                    }
                    let errors = failure.write_errors.as_deref().unwrap_or_default();
                    let mut stored = Vec::new();
                    let mut others = Vec::new();
                    for we in errors {
                        match records.get(we.index) {
                            Some(r) if we.code == codes::DUPLICATE_KEY => {
                                if r.status.is_final() {
                                    stored.push(*r);
                                }
                            }
                            _ => others.push((we.index, we.code, we.message.as_str())),
                        }
                    }
                    Ok((classify(records, others.into_iter())?, stored))
                }
                _ => Err(unavailable(&format!("cannot insert {} run records", records.len()), e)),
            },
        }
    }

    /// Final records: unordered replacement upserts by `_id`, in small commands, a few at once.
    async fn upsert_final(&self, records: &[&RunRecord]) -> Result<Vec<RejectedRun>, BackendError> {
        let mut chunks: Vec<&[&RunRecord]> = Vec::new();
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len() && end - start < MAX_STATEMENTS {
                let size = estimated_size(records[end]);
                if end > start && bytes + size > MAX_COMMAND_BYTES {
                    break;
                }
                bytes += size;
                end += 1;
            }
            chunks.push(&records[start..end]);
            start = end;
        }
        let commands: Vec<futures::future::BoxFuture<'_, Result<Vec<RejectedRun>, BackendError>>> =
            chunks.into_iter().map(|c| Box::pin(self.upsert_chunk(c)) as futures::future::BoxFuture<'_, _>).collect();
        let results: Vec<Result<Vec<RejectedRun>, BackendError>> =
            futures::stream::iter(commands).buffer_unordered(UPDATES_IN_FLIGHT).collect().await;
        let mut rejected = Vec::new();
        for r in results {
            rejected.extend(r?);
        }
        Ok(rejected)
    }

    async fn upsert_chunk(&self, records: &[&RunRecord]) -> Result<Vec<RejectedRun>, BackendError> {
        let updates: Vec<Bson> = records
            .iter()
            .map(|r| {
                Bson::Document(doc! { "q": { "_id": &r.id.0 }, "u": to_document(r, self.expire_at(r)), "upsert": true })
            })
            .collect();
        let mut command = doc! { "update": self.coll.name(), "updates": updates, "ordered": false };
        if let Some(wc) = self.coll.write_concern().and_then(|wc| mongodb::bson::to_document(wc).ok()) {
            if !wc.is_empty() {
                command.insert("writeConcern", wc);
            }
        }
        let reply = self
            .db
            .run_command(command)
            .await
            .map_err(|e| unavailable(&format!("cannot upsert {} run records", records.len()), e))?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(unavailable("write concern not satisfied", wce.get_str("errmsg").unwrap_or("")));
        }
        let errors: Vec<(usize, i32, String)> = reply
            .get_array("writeErrors")
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(Bson::as_document)
                    .map(|we| {
                        let index = int(we.get("index")).and_then(|i| usize::try_from(i).ok()).unwrap_or(usize::MAX);
                        let code = int(we.get("code")).and_then(|c| i32::try_from(c).ok()).unwrap_or(0);
                        (index, code, we.get_str("errmsg").unwrap_or("").to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        classify(records, errors.iter().map(|(i, c, m)| (*i, *c, m.as_str())))
    }

    async fn find_page(&self, query: &RunQuery) -> Result<RunPage, BackendError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let filter = filter_doc(&query.filter, query.after.as_ref());
        let docs: Vec<Document> = self
            .coll
            .find(filter)
            .sort(doc! { "startTime": -1, "_id": -1 })
            .projection(doc! { "output": 0 })
            .skip(query.skip)
            .limit(i64::from(limit))
            .await
            .map_err(|e| unavailable("cannot query runs", e))?
            .try_collect()
            .await
            .map_err(|e| unavailable("cannot read runs", e))?;
        // The cursor comes from the last document's raw fields, so a skipped unreadable one
        // keeps paging right.
        let next_cursor = match docs.last() {
            Some(last) if docs.len() == limit as usize => {
                let start = int(last.get("startTime")).and_then(DateTime::from_timestamp_millis);
                start.map(|start_time| RunCursor { start_time, id: RunId(id_text(last.get("_id"))) }.encode())
            }
            _ => None,
        };
        let runs = docs
            .iter()
            .filter_map(|d| match from_document(d) {
                Ok(r) => Some(r),
                Err(e) => {
                    log::warn!(
                        "Skipping a stored run that does not read as a run. id={} error={e}",
                        id_text(d.get("_id"))
                    );
                    None
                }
            })
            .collect();
        Ok(RunPage { runs, next_cursor })
    }

    /// Stats from the runs' fields, streamed (servers without the aggregations).
    async fn streamed_stats(&self, job: &JobName, window: Document) -> Result<JobStats, BackendError> {
        let projection =
            doc! { "status": 1, "err": 1, "startTime": 1, "endTime": 1, "startedAt": 1, "durationMs": 1, "jobName": 1 };
        let mut cursor = self
            .coll
            .find(window)
            .projection(projection)
            .await
            .map_err(|e| unavailable(&format!("cannot compute stats of job {job}"), e))?;
        let mut stats = StatsBuilder::default();
        while let Some(d) =
            cursor.try_next().await.map_err(|e| unavailable(&format!("cannot compute stats of job {job}"), e))?
        {
            match from_document(&d) {
                Ok(r) => stats.add(r.status, r.start_time(), r.duration_ms),
                Err(e) => log::warn!("Ignoring a stored run in stats. job={job} error={e}"),
            }
        }
        Ok(stats.finish())
    }

    /// The newest run of each of `jobs`, one query each (servers without the aggregation).
    async fn last_runs_per_job(&self, jobs: &[JobName]) -> Result<HashMap<JobName, RunRecord>, BackendError> {
        crate::backend::logs::last_runs_one_query_each(self, jobs).await
    }

    /// The newest run of each of `jobs` (at most [`LAST_RUNS_CHUNK`]) in one aggregation.
    async fn last_runs_chunk(&self, jobs: &[JobName]) -> Result<Vec<Document>, mongodb::error::Error> {
        let names: Vec<&str> = jobs.iter().map(JobName::as_str).collect();
        let pipeline = vec![
            doc! { "$match": { "jobName": { "$in": names } } },
            doc! { "$project": { "output": 0 } },
            doc! { "$sort": { "jobName": 1, "startTime": -1, "_id": -1 } },
            doc! { "$group": { "_id": "$jobName", "run": { "$first": "$$ROOT" } } },
        ];
        let groups: Vec<Document> = self.coll.aggregate(pipeline).await?.try_collect().await?;
        Ok(groups.into_iter().filter_map(|mut g| g.remove("run").and_then(|r| r.as_document().cloned())).collect())
    }

    /// Runs matching `window` per `status` (null for the seed's documents), in one `$group`.
    async fn status_counts(&self, window: &Document) -> Result<Vec<(Option<String>, u64)>, mongodb::error::Error> {
        let pipeline =
            vec![doc! { "$match": window.clone() }, doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } }];
        let groups: Vec<Document> = self.coll.aggregate(pipeline).await?.try_collect().await?;
        Ok(groups
            .iter()
            .map(|g| {
                (
                    g.get_str("_id").ok().map(str::to_owned),
                    int(g.get("n")).and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                )
            })
            .collect())
    }

    /// The newest `startTime` among runs matching `window` and `outcome` (one index-ordered read).
    async fn newest_start(&self, window: &Document, outcome: Document) -> Result<Option<i64>, mongodb::error::Error> {
        let found = self
            .coll
            .find_one(doc! { "$and": [window.clone(), outcome] })
            .sort(doc! { "startTime": -1 })
            .projection(doc! { "startTime": 1 })
            .await?;
        Ok(found.and_then(|d| int(d.get("startTime"))))
    }

    /// Stats of the final runs matching `window`, aggregated in the store: counts by status in
    /// one `$group` (FerretDB 1.24 has `$sum` but not `$max`), the last success and failure and
    /// each percentile by one sorted read.
    async fn aggregated_stats(&self, window: &Document) -> Result<JobStats, mongodb::error::Error> {
        let failures: Vec<&str> = failure_statuses().collect();
        let mut stats = JobStats::default();
        let mut seed_runs = 0;
        for (status, n) in self.status_counts(window).await? {
            stats.runs += n;
            match status.as_deref() {
                Some("succeeded") => stats.succeeded += n,
                Some(s) if failures.contains(&s) => stats.failed += n,
                Some(_) => {}
                // The seed's documents have no status: succeeded when `err` is "", else failed.
                None => seed_runs += n,
            }
        }
        let seed_ok = doc! { "status": { "$exists": false }, "err": "" };
        let seed_failed = doc! { "status": { "$exists": false }, "err": { "$ne": "" } };
        if seed_runs > 0 {
            let ok = self.coll.count_documents(doc! { "$and": [window.clone(), seed_ok.clone()] }).await?;
            stats.succeeded += ok;
            stats.failed += seed_runs.saturating_sub(ok);
        }
        let success = doc! { "$or": [ { "status": "succeeded" }, seed_ok ] };
        let failure = doc! { "$or": [ { "status": { "$in": &failures } }, seed_failed ] };
        if stats.succeeded > 0 {
            stats.last_success = self.newest_start(window, success).await?.and_then(DateTime::from_timestamp_millis);
        }
        if stats.failed > 0 {
            stats.last_failure = self.newest_start(window, failure).await?.and_then(DateTime::from_timestamp_millis);
        }
        let mut timed_filter = window.clone();
        timed_filter.insert("durationMs", doc! { "$type": "number" });
        let timed = self.coll.count_documents(timed_filter).await?;
        stats.p50_ms = self.duration_percentile(window, timed, 50).await?;
        stats.p95_ms = self.duration_percentile(window, timed, 95).await?;
        Ok(stats)
    }

    /// The `p`th percentile of `durationMs` among the `timed` runs matching `window`.
    async fn duration_percentile(
        &self,
        window: &Document,
        timed: u64,
        p: usize,
    ) -> Result<Option<u64>, mongodb::error::Error> {
        let Some(index) = percentile_index(timed, p) else { return Ok(None) };
        let mut filter = window.clone();
        filter.insert("durationMs", doc! { "$type": "number" });
        let found = self
            .coll
            .find_one(filter)
            .sort(doc! { "durationMs": 1 })
            .skip(index as u64)
            .projection(doc! { "durationMs": 1 })
            .await?;
        Ok(found.and_then(|d| int(d.get("durationMs"))).and_then(|ms| u64::try_from(ms).ok()))
    }
}

impl MongoLogStore {
    /// `job`'s runs started in `[from, to)`, in buckets: a `$match` on the `{jobName,
    /// startTime}` index and a `$project` down to status, start and duration run in the store;
    /// the rows stream into [`BucketBuilder`] (FerretDB 1.24 has no `$push` or `$percentile`
    /// to rank durations per group).
    async fn bucket_pipeline(
        &self,
        job: &JobName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_ms: i64,
    ) -> Result<Vec<RunBucket>, mongodb::error::Error> {
        let pipeline = vec![
            doc! { "$match": { "jobName": job.as_str(), "startTime": { "$gte": ms(from), "$lt": ms(to) } } },
            doc! { "$project": { "_id": 0, "status": 1, "err": 1, "startTime": 1, "durationMs": 1 } },
        ];
        let mut cursor = self.coll.aggregate(pipeline).await?;
        let mut builder = BucketBuilder::new(from, bucket_ms);
        while let Some(d) = cursor.try_next().await? {
            let status = match d.get_str("status") {
                Ok(s) => RunStatus::parse(s),
                // The seed's documents: succeeded when `err` is empty.
                Err(_) if d.get_str("err").unwrap_or("").is_empty() => Some(RunStatus::Succeeded),
                Err(_) => Some(RunStatus::Failed),
            };
            let start = int(d.get("startTime")).and_then(DateTime::from_timestamp_millis);
            if let (Some(status), Some(start)) = (status, start) {
                builder.add(status, start, int(d.get("durationMs")).and_then(|v| u64::try_from(v).ok()));
            }
        }
        Ok(builder.finish())
    }
}

/// Splits a batch per run id, applying it in slice order: a final record replaces an earlier
/// record of its run, a `running` record replaces only an earlier `running` one.
fn collapse(records: &[RunRecord]) -> (Vec<&RunRecord>, Vec<&RunRecord>) {
    let mut order: Vec<&RunId> = Vec::new();
    let mut latest: std::collections::HashMap<&RunId, &RunRecord> = std::collections::HashMap::new();
    for r in records {
        match latest.get(&r.id) {
            None => {
                order.push(&r.id);
                latest.insert(&r.id, r);
            }
            Some(prev) if r.status.is_final() || !prev.status.is_final() => {
                latest.insert(&r.id, r);
            }
            Some(_) => {}
        }
    }
    let mut running = Vec::new();
    let mut finals = Vec::new();
    for id in order {
        if let Some(r) = latest.get(id) {
            if r.status.is_final() {
                finals.push(*r);
            } else {
                running.push(*r);
            }
        }
    }
    (running, finals)
}

/// Sorts per-document errors (duplicate keys on insert are handled before): codes a retry may
/// cure fail the batch; the rest are rejected records.
fn classify<'a>(
    records: &[&RunRecord],
    errors: impl Iterator<Item = (usize, i32, &'a str)>,
) -> Result<Vec<RejectedRun>, BackendError> {
    let mut rejected = Vec::new();
    for (index, code, message) in errors {
        // A duplicate key on an upsert is a race with another writer of the same _id: retry.
        if code == codes::DUPLICATE_KEY || codes::TRANSIENT.contains(&code) {
            return Err(unavailable("a record write failed transiently", format!("code {code}: {message}")));
        }
        let Some(r) = records.get(index) else {
            return Err(unavailable(
                "the server reported an error for an unknown record",
                format!("code {code}: {message}"),
            ));
        };
        rejected.push(RejectedRun { id: r.id.clone(), status: r.status, reason: format!("code {code}: {message}") });
    }
    Ok(rejected)
}

fn estimated_size(r: &RunRecord) -> usize {
    r.output.len().min(MAX_DOC_OUTPUT_BYTES) + r.command.len() + r.err.len() + r.job.as_str().len() + 512
}

/// An integer field of any BSON number type.
fn int(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) if f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

fn id_text(v: Option<&Bson>) -> String {
    match v {
        Some(Bson::String(s)) => s.clone(),
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The `_id` values a run id may be stored under: the string, and the ObjectId of a seed
/// document when the id is 24 hex digits.
fn id_values(id: &RunId) -> Bson {
    match ObjectId::parse_str(&id.0) {
        Ok(oid) => doc! { "$in": [Bson::String(id.0.clone()), Bson::ObjectId(oid)] }.into(),
        Err(_) => Bson::String(id.0.clone()),
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Keeps a head and a tail of `output` within [`MAX_DOC_OUTPUT_BYTES`].
fn capped_output(output: &str) -> Option<String> {
    if output.len() <= MAX_DOC_OUTPUT_BYTES {
        return None;
    }
    let half = MAX_DOC_OUTPUT_BYTES / 2 - 64;
    let mut head_end = half;
    while !output.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = output.len() - half;
    while !output.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    Some(format!(
        "{}\n… [{} bytes cut: MongoDB documents are limited to 16 MiB] …\n{}",
        &output[..head_end],
        tail_start - head_end,
        &output[tail_start..]
    ))
}

/// The document for `r` (see the module docs), with `expireAt` when given.
pub fn to_document(r: &RunRecord, expire_at: Option<DateTime<Utc>>) -> Document {
    let capped = capped_output(&r.output);
    let opt_i32 = |v: Option<i32>| v.map_or(Bson::Null, Bson::Int32);
    let mut d = doc! {
        "_id": &r.id.0,
        "jobName": r.job.as_str(),
        "command": &r.command,
        "err": &r.err,
        "output": capped.as_deref().unwrap_or(&r.output),
        "planTime": ms(r.scheduled_at),
        "scheduleTime": ms(r.dispatched_at),
        "startTime": ms(r.start_time()),
        "endTime": r.ended_at.map_or(0, ms),
        "status": r.status.as_str(),
        "trigger": r.trigger.as_str(),
        "worker": &r.worker.0,
        "startedAt": r.started_at.map_or(Bson::Null, |t| Bson::Int64(ms(t))),
        "exitCode": opt_i32(r.exit_code),
        "signal": opt_i32(r.signal),
        "durationMs": r.duration_ms.map_or(Bson::Null, |d| Bson::Int64(i64::try_from(d).unwrap_or(i64::MAX))),
        "attempt": i32::try_from(r.attempt).unwrap_or(i32::MAX),
        "fence": r.fence.0,
        "jobVersion": r.job_version.map_or(Bson::Null, |v| Bson::Int64(i64::try_from(v).unwrap_or(i64::MAX))),
        "outputBytes": i64::try_from(r.output_bytes).unwrap_or(i64::MAX),
        "outputTruncated": r.output_truncated || capped.is_some(),
    };
    // Only while a run is alive do these matter (a restarted node finds its leftovers by them).
    if let Some(pgid) = r.pgid {
        d.insert("pgid", pgid);
    }
    if let Some(ticks) = r.proc_start_ticks {
        d.insert("procStartTicks", i64::try_from(ticks).unwrap_or(i64::MAX));
    }
    // Jittered runs only: an extra field, the seed's document shape stays as it is.
    if let Some(t) = r.fire_at {
        d.insert("fireAt", ms(t));
    }
    if let Some(params) = &r.params {
        let p: Document = params.iter().map(|(k, v)| (k.clone(), Bson::String(v.clone()))).collect();
        d.insert("params", p);
    }
    if let Some(t) = expire_at {
        d.insert("expireAt", mongodb::bson::DateTime::from_millis(ms(t)));
    }
    d
}

/// Reads a document written by distcron or by the seed (see the module docs).
///
/// # Errors
/// What is missing or malformed.
pub fn from_document(d: &Document) -> Result<RunRecord, String> {
    let id = match d.get("_id") {
        Some(Bson::String(s)) => s.clone(),
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(other) => return Err(format!("_id of unexpected type {:?}", other.element_type())),
        None => return Err("no _id".into()),
    };
    let text = |k: &str| match d.get(k) {
        Some(Bson::String(s)) => s.clone(),
        _ => String::new(),
    };
    let time = |k: &str| int(d.get(k)).filter(|ms| *ms != 0).and_then(DateTime::from_timestamp_millis);
    let job = JobName::parse(&text("jobName")).map_err(|e| format!("jobName: {}", e.message))?;
    let err = text("err");
    let status = match d.get("status") {
        Some(Bson::String(s)) => RunStatus::parse(s).ok_or_else(|| format!("unknown status {s:?}"))?,
        // The seed's documents: err is "" on success.
        _ if err.is_empty() => RunStatus::Succeeded,
        _ => RunStatus::Failed,
    };
    let seed = !d.contains_key("status");
    let start_time = time("startTime");
    let started_at = match d.get("startedAt") {
        Some(Bson::Null) => None,
        Some(v) => int(Some(v)).and_then(DateTime::from_timestamp_millis),
        None => start_time,
    };
    let ended_at = time("endTime");
    let dispatched_at = time("scheduleTime").or(start_time).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let duration_ms = match int(d.get("durationMs")) {
        Some(ms) => u64::try_from(ms).ok(),
        None if seed => match (started_at, ended_at) {
            (Some(s), Some(e)) => u64::try_from((e - s).num_milliseconds()).ok(),
            _ => None,
        },
        None => None,
    };
    let output = text("output");
    let small_int = |k: &str| int(d.get(k)).and_then(|v| i32::try_from(v).ok());
    Ok(RunRecord {
        id: RunId(id),
        job,
        command: text("command"),
        status,
        trigger: Trigger::parse_or_schedule(&text("trigger")),
        scheduled_at: time("planTime").unwrap_or(dispatched_at),
        dispatched_at,
        started_at,
        ended_at,
        duration_ms,
        exit_code: small_int("exitCode"),
        signal: small_int("signal"),
        err,
        output_bytes: int(d.get("outputBytes")).and_then(|n| u64::try_from(n).ok()).unwrap_or(output.len() as u64),
        output_truncated: d.get_bool("outputTruncated").unwrap_or(false),
        output,
        worker: WorkerId(text("worker")),
        attempt: int(d.get("attempt")).and_then(|a| u32::try_from(a).ok()).filter(|a| *a > 0).unwrap_or(1),
        fence: Fence(int(d.get("fence")).unwrap_or(0)),
        job_version: int(d.get("jobVersion")).and_then(|v| u64::try_from(v).ok()),
        pgid: int(d.get("pgid")).and_then(|v| i32::try_from(v).ok()),
        proc_start_ticks: int(d.get("procStartTicks")).and_then(|v| u64::try_from(v).ok()),
        fire_at: time("fireAt"),
        params: match d.get("params") {
            Some(Bson::Document(p)) => {
                Some(p.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
            }
            _ => None,
        },
    })
}

/// The filter for `filter` (and `after`), matching the seed's documents too.
fn filter_doc(filter: &RunFilter, after: Option<&RunCursor>) -> Document {
    let mut and: Vec<Document> = Vec::new();
    if let Some(job) = &filter.job {
        and.push(doc! { "jobName": job.as_str() });
    }
    if let Some(status) = filter.status {
        // A seed document has no status: succeeded when err is "", else failed.
        and.push(match status {
            RunStatus::Succeeded => {
                doc! { "$or": [ { "status": "succeeded" }, { "status": { "$exists": false }, "err": "" } ] }
            }
            RunStatus::Failed => {
                doc! { "$or": [ { "status": "failed" }, { "status": { "$exists": false }, "err": { "$ne": "" } } ] }
            }
            other => doc! { "status": other.as_str() },
        });
    }
    if let Some(worker) = &filter.worker {
        and.push(doc! { "worker": &worker.0 });
    }
    if let Some(from) = filter.from {
        and.push(doc! { "startTime": { "$gte": ms(from) } });
    }
    if let Some(to) = filter.to {
        and.push(doc! { "startTime": { "$lt": ms(to) } });
    }
    if let Some(cursor) = after {
        let t = ms(cursor.start_time);
        // Order is (startTime, _id) descending; BSON orders ObjectIds (seed) after strings
        // (ours), and comparisons only match values of the same type.
        and.push(match ObjectId::parse_str(&cursor.id.0) {
            Ok(oid) => doc! { "$or": [
                { "startTime": { "$lt": t } },
                { "startTime": t, "_id": { "$lt": oid } },
                { "startTime": t, "_id": { "$type": "string" } },
            ] },
            Err(_) => doc! { "$or": [
                { "startTime": { "$lt": t } },
                { "startTime": t, "_id": { "$lt": &cursor.id.0 } },
            ] },
        });
    }
    match and.len() {
        0 => Document::new(),
        1 => and.pop().unwrap_or_default(),
        _ => doc! { "$and": and },
    }
}

#[async_trait]
impl LogStore for MongoLogStore {
    async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError> {
        let (running, finals) = collapse(records);
        let all: Vec<&RunRecord> = running.into_iter().chain(finals).collect();
        let (mut rejected, stored) = self.insert_new(&all).await?;
        rejected.extend(self.upsert_final(&stored).await?);
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Rejected { backend: BACKEND, rejected })
        }
    }

    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>, BackendError> {
        let found = self
            .coll
            .find_one(doc! { "_id": id_values(id) })
            .await
            .map_err(|e| unavailable(&format!("cannot read run {id}"), e))?;
        found
            .map(|d| {
                from_document(&d).map_err(|message| BackendError::Corrupt {
                    backend: BACKEND,
                    message: format!("run {id}: {message}"),
                })
            })
            .transpose()
    }

    async fn query(&self, query: &RunQuery) -> Result<RunPage, BackendError> {
        self.find_page(query).await
    }

    async fn read_output(&self, id: &RunId, max_bytes: usize) -> Result<Option<(String, u64)>, BackendError> {
        let found = self
            .coll
            .find_one(doc! { "_id": id_values(id) })
            .projection(doc! { "output": 1 })
            .await
            .map_err(|e| unavailable(&format!("cannot read the output of run {id}"), e))?;
        Ok(found.map(|d| {
            let output = d.get_str("output").unwrap_or("");
            let cut = output.as_bytes().get(..max_bytes).unwrap_or(output.as_bytes());
            (utf8_prefix(cut), output.len() as u64)
        }))
    }

    async fn last_runs(&self, jobs: &[JobName]) -> Result<HashMap<JobName, RunRecord>, BackendError> {
        let mut found = HashMap::with_capacity(jobs.len());
        for chunk in jobs.chunks(LAST_RUNS_CHUNK) {
            let docs = if self.no_last_runs_aggregation.load(std::sync::atomic::Ordering::Relaxed) {
                None
            } else {
                match self.last_runs_chunk(chunk).await {
                    Ok(docs) => Some(docs),
                    Err(e) if self.refused_aggregation(&e, "last runs", &self.no_last_runs_aggregation) => None,
                    Err(e) => return Err(unavailable("cannot read the last runs", e)),
                }
            };
            let Some(docs) = docs else {
                found.extend(self.last_runs_per_job(chunk).await?);
                continue;
            };
            for d in docs {
                match from_document(&d) {
                    Ok(run) => {
                        found.insert(run.job.clone(), run);
                    }
                    Err(e) => log::warn!(
                        "Skipping a stored run that does not read as a run. id={} error={e}",
                        id_text(d.get("_id"))
                    ),
                }
            }
        }
        Ok(found)
    }

    async fn run_points(
        &self,
        job: &JobName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunPoint>, BackendError> {
        let context = || format!("cannot read the run points of job {job}");
        let mut cursor = self
            .coll
            .find(doc! { "jobName": job.as_str(), "startTime": { "$gte": ms(from), "$lt": ms(to) } })
            .sort(doc! { "startTime": -1, "_id": -1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .projection(doc! { "output": 0, "command": 0 })
            .await
            .map_err(|e| unavailable(&context(), e))?;
        let mut points = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(|e| unavailable(&context(), e))? {
            match from_document(&d) {
                Ok(run) => points.push(RunPoint::of(&run)),
                Err(e) => log::warn!(
                    "Skipping a stored run that does not read as a run. id={} error={e}",
                    id_text(d.get("_id"))
                ),
            }
        }
        Ok(points)
    }

    async fn run_buckets(
        &self,
        job: &JobName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_ms: i64,
    ) -> Result<Vec<RunBucket>, BackendError> {
        self.bucket_pipeline(job, from, to, bucket_ms)
            .await
            .map_err(|e| unavailable(&format!("cannot compute the run buckets of job {job}"), e))
    }

    async fn runs_per_worker(&self, since: DateTime<Utc>) -> Result<BTreeMap<WorkerId, u64>, BackendError> {
        let pipeline = vec![
            doc! { "$match": { "startTime": { "$gte": ms(since) }, "status": { "$nin": ["skipped", "missed", "superseded"] } } },
            doc! { "$group": { "_id": "$worker", "n": { "$sum": 1 } } },
        ];
        let context = "cannot count runs per worker";
        let groups: Vec<Document> = self
            .coll
            .aggregate(pipeline)
            .await
            .map_err(|e| unavailable(context, e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(context, e))?;
        Ok(groups
            .iter()
            .filter_map(|g| {
                let worker = g.get_str("_id").ok().filter(|w| !w.is_empty())?;
                Some((WorkerId(worker.to_owned()), int(g.get("n")).and_then(|n| u64::try_from(n).ok()).unwrap_or(0)))
            })
            .collect())
    }

    async fn count(&self, filter: &RunFilter) -> Result<u64, BackendError> {
        self.coll.count_documents(filter_doc(filter, None)).await.map_err(|e| unavailable("cannot count runs", e))
    }

    async fn stats(&self, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError> {
        let window =
            doc! { "jobName": job.as_str(), "startTime": { "$gte": ms(since) }, "status": { "$ne": "running" } };
        if !self.no_stats_aggregation.load(std::sync::atomic::Ordering::Relaxed) {
            match self.aggregated_stats(&window).await {
                Ok(stats) => return Ok(stats),
                Err(e) if self.refused_aggregation(&e, "stats", &self.no_stats_aggregation) => {}
                Err(e) => return Err(unavailable(&format!("cannot compute stats of job {job}"), e)),
            }
        }
        self.streamed_stats(job, window).await
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let res = self
            .coll
            .delete_many(doc! { "startTime": { "$lt": ms(before) } })
            .await
            .map_err(|e| unavailable("cannot purge old runs", e))?;
        Ok(res.deleted_count)
    }

    async fn apply_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<u64, BackendError> {
        match self.shared.policy.write() {
            Ok(mut p) => *p = policy.clone(),
            Err(poisoned) => *poisoned.into_inner() = policy.clone(),
        }
        let mut deleted = 0;
        for (job, cutoff) in policy.job_cutoffs(now) {
            let filter = doc! { "jobName": job.as_str(), "startTime": { "$lt": ms(cutoff) } };
            let res = self
                .coll
                .delete_many(filter)
                .await
                .map_err(|e| unavailable(&format!("cannot purge old runs of job {job}"), e))?;
            deleted += res.deleted_count;
        }
        if let Some(cutoff) = policy.default_cutoff(now) {
            let overridden: Vec<&str> = policy.per_job.keys().map(JobName::as_str).collect();
            let filter = doc! { "jobName": { "$nin": overridden }, "startTime": { "$lt": ms(cutoff) } };
            let res = self.coll.delete_many(filter).await.map_err(|e| unavailable("cannot purge old runs", e))?;
            deleted += res.deleted_count;
        }
        Ok(deleted)
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.db.run_command(doc! { "ping": 1 }).await.map(|_| ()).map_err(|e| unavailable("ping failed", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance::sample_run;

    fn job() -> JobName {
        JobName::parse("golden").expect("name")
    }

    #[test]
    fn documents_round_trip_every_status() {
        for status in RunStatus::ALL {
            let r = sample_run(&job(), status, "w1", Utc::now(), Some(42));
            let d = to_document(&r, None);
            assert_eq!(from_document(&d).expect("reads"), r, "{status}");
        }
    }

    #[test]
    fn seed_fields_have_the_seed_types() {
        let r = sample_run(&job(), RunStatus::Running, "w1", Utc::now(), None);
        let d = to_document(&r, Some(Utc::now()));
        for k in ["jobName", "command", "err", "output"] {
            assert!(matches!(d.get(k), Some(Bson::String(_))), "{k}");
        }
        for k in ["planTime", "scheduleTime", "startTime", "endTime"] {
            assert!(matches!(d.get(k), Some(Bson::Int64(_))), "{k}");
        }
        assert_eq!(d.get_i64("endTime"), Ok(0), "a running run has no end yet");
        assert!(matches!(d.get("expireAt"), Some(Bson::DateTime(_))));
    }

    #[test]
    fn a_seed_document_reads_as_a_run() {
        let oid = ObjectId::new();
        let d = doc! { "_id": oid, "jobName": "job1", "command": "echo hi", "err": "", "output": "hi\n",
        "planTime": 1_700_000_000_000_i64, "scheduleTime": 1_700_000_000_003_i64,
        "startTime": 1_700_000_000_005_i64, "endTime": 1_700_000_000_105_i64 };
        let r = from_document(&d).expect("reads");
        assert_eq!(r.id.0, oid.to_hex());
        assert_eq!(
            (r.status, r.trigger, r.duration_ms, r.attempt),
            (RunStatus::Succeeded, Trigger::Schedule, Some(100), 1)
        );
        assert_eq!(r.start_time().timestamp_millis(), 1_700_000_000_005);
        assert_eq!(r.output_bytes, 3);
        let failed = doc! { "_id": ObjectId::new(), "jobName": "job1", "err": "exit status 1", "startTime": 5_i64 };
        assert_eq!(from_document(&failed).expect("reads").status, RunStatus::Failed);
    }

    #[test]
    fn a_batch_collapses_per_run_in_slice_order() {
        let running = sample_run(&job(), RunStatus::Running, "w", Utc::now(), None);
        let mut done = running.clone();
        done.status = RunStatus::Succeeded;
        let other = sample_run(&job(), RunStatus::Running, "w", Utc::now(), None);
        let batch = [running.clone(), done.clone(), running.clone(), other.clone()];
        let (r, f) = collapse(&batch);
        assert_eq!(r, vec![&other]);
        assert_eq!(f, vec![&done], "a late running record does not replace the final one");
    }

    #[test]
    fn huge_outputs_are_capped_below_the_document_limit() {
        let mut r = sample_run(&job(), RunStatus::Succeeded, "w", Utc::now(), Some(1));
        r.output = "é".repeat(9 * 1024 * 1024) + "END";
        let d = to_document(&r, None);
        let out = d.get_str("output").expect("output");
        assert!(out.len() <= MAX_DOC_OUTPUT_BYTES + 200 && out.ends_with("END"));
        assert_eq!(d.get_bool("outputTruncated"), Ok(true));
    }

    #[test]
    fn transient_codes_fail_the_batch_and_others_reject_the_record() {
        let r = sample_run(&job(), RunStatus::Running, "w", Utc::now(), None);
        let recs = [&r];
        assert!(classify(&recs, [(0, 11000, "dup on upsert")].into_iter()).is_err());
        assert!(classify(&recs, [(0, 91, "shutting down")].into_iter()).is_err());
        assert!(classify(&recs, [(5, 121, "unknown index")].into_iter()).is_err());
        let rejected = classify(&recs, [(0, 121, "Document failed validation")].into_iter()).expect("rejected");
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].reason.contains("121"));
    }
}
