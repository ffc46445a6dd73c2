//! The log store port: run records, written in idempotent batches and queried by the API, and
//! the pieces every adapter shares (retention policy, stats arithmetic, output budgets).
//!
//! Reads do not scale with output size: listings ([`LogStore::query`], [`LogStore::last_runs`])
//! return *summaries* (every field but `output`, which is left empty; `output_bytes` still says
//! how large it is), [`LogStore::stats`] aggregates in the store, and outputs are read only for
//! one run ([`LogStore::get`]) or under a byte budget ([`LogStore::query_with_output`], the seed's
//! `/job/log`). Owns the port and its shared arithmetic; leaves storage layouts to the adapters.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BackendError;
use crate::domain::{JobName, RunId, RunRecord, RunStatus, WorkerId};

/// Which runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only this job.
    pub job: Option<JobName>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only this worker.
    pub worker: Option<WorkerId>,
    /// Start time (see [`RunRecord::start_time`]) at or after.
    pub from: Option<DateTime<Utc>>,
    /// Start time before.
    pub to: Option<DateTime<Utc>>,
}

/// Position after the last run of a page: runs are ordered by (start time, id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    /// Start time of the last run returned.
    pub start_time: DateTime<Utc>,
    /// Id of the last run returned.
    pub id: RunId,
}

impl RunCursor {
    /// Opaque text form for URLs: `<ms since epoch>_<run id>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.start_time.timestamp_millis(), self.id)
    }

    /// Parses [`RunCursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        let start_time = DateTime::from_timestamp_millis(ms.parse().ok()?)?;
        if id.is_empty() {
            return None;
        }
        Some(Self { start_time, id: RunId(id.to_owned()) })
    }
}

/// A page request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunQuery {
    /// Which runs.
    pub filter: RunFilter,
    /// Continue after this cursor (newest first); stable while new runs arrive.
    pub after: Option<RunCursor>,
    /// Skip this many (the seed's `skip`; prefer `after`).
    pub skip: u64,
    /// At most this many.
    pub limit: u32,
}

/// A page of runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunPage {
    /// Runs, newest start time first: summaries from [`LogStore::query`] (see [`summary`]),
    /// outputs within a budget from [`LogStore::query_with_output`].
    pub runs: Vec<RunRecord>,
    /// Cursor for the next page, when there may be one.
    pub next_cursor: Option<String>,
}

/// Per-job figures over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobStats {
    /// Runs with a final status in the window.
    pub runs: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Of which failed, timed out, errored, were killed or lost.
    pub failed: u64,
    /// Median duration of runs that started, ms.
    pub p50_ms: Option<u64>,
    /// 95th percentile duration, ms.
    pub p95_ms: Option<u64>,
    /// Start time of the last succeeded run.
    pub last_success: Option<DateTime<Utc>>,
    /// Start time of the last failed run.
    pub last_failure: Option<DateTime<Utc>>,
}

/// How long run records are kept: a global default and per-job overrides (days; 0 = forever).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days for jobs without an override (`log_batch.retention_days`); 0 = forever.
    pub default_days: u32,
    /// Jobs with their own `retention_days`.
    pub per_job: BTreeMap<JobName, u32>,
}

impl RetentionPolicy {
    /// Days kept for `job`'s runs (0 = forever).
    pub fn days_for(&self, job: &JobName) -> u32 {
        self.per_job.get(job).copied().unwrap_or(self.default_days)
    }

    /// The start time before which `job`'s runs are deleted at `now`, if any are.
    pub fn cutoff_for(&self, job: &JobName, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        days_cutoff(self.days_for(job), now)
    }

    /// The cutoff of jobs without an override.
    pub fn default_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        days_cutoff(self.default_days, now)
    }

    /// Overridden jobs whose runs do expire, with their cutoff at `now`.
    pub fn job_cutoffs(&self, now: DateTime<Utc>) -> impl Iterator<Item = (&JobName, DateTime<Utc>)> + '_ {
        self.per_job.iter().filter_map(move |(job, days)| days_cutoff(*days, now).map(|c| (job, c)))
    }
}

fn days_cutoff(days: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (days > 0).then(|| now - chrono::Duration::days(i64::from(days)))
}

/// A run without its output, as listings return it: `output` empty, every other field
/// (`output_bytes` and `output_truncated` included) as stored.
pub fn summary(run: &RunRecord) -> RunRecord {
    RunRecord { output: String::new(), ..run.clone() }
}

/// `bytes` as text, cut back to a character boundary (a byte budget may split the last
/// character; anything else invalid is replaced).
pub(crate) fn utf8_prefix(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The text `query_with_output` puts in place of output past its budget.
pub fn budget_marker(cut_bytes: u64) -> String {
    format!("\n… [{cut_bytes} bytes not shown: over this reply's output budget; the run's own page has them] …\n")
}

/// True for the final statuses counted as failures in [`JobStats`].
pub(crate) fn is_failure(status: RunStatus) -> bool {
    matches!(status, RunStatus::Failed | RunStatus::Timeout | RunStatus::Error | RunStatus::Killed | RunStatus::Lost)
}

/// Nearest-rank percentile of ascending `sorted` values.
pub(crate) fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    sorted.get(percentile_index(sorted.len() as u64, p)?).copied()
}

/// The 0-based position of the nearest-rank `p`th percentile among `n` ascending values
/// (`None` when there are none): stores that sort in place skip to it.
pub(crate) fn percentile_index(n: u64, p: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let rank = (p as u64 * n).div_ceil(100).max(1);
    usize::try_from(rank - 1).ok()
}

/// The final statuses counted as failures in [`JobStats`], as their names.
pub(crate) fn failure_statuses() -> impl Iterator<Item = &'static str> {
    RunStatus::ALL.into_iter().filter(|s| is_failure(*s)).map(RunStatus::as_str)
}

/// Accumulates [`JobStats`] from final runs, one at a time (adapters that cannot compute
/// percentiles in the store feed it their rows).
#[derive(Debug, Default)]
pub(crate) struct StatsBuilder {
    stats: JobStats,
    durations: Vec<u64>,
}

impl StatsBuilder {
    /// Counts one run with a final status.
    pub(crate) fn add(&mut self, status: RunStatus, start: DateTime<Utc>, duration_ms: Option<u64>) {
        if !status.is_final() {
            return;
        }
        self.stats.runs += 1;
        if status == RunStatus::Succeeded {
            self.stats.succeeded += 1;
            self.stats.last_success = self.stats.last_success.max(Some(start));
        } else if is_failure(status) {
            self.stats.failed += 1;
            self.stats.last_failure = self.stats.last_failure.max(Some(start));
        }
        if let Some(ms) = duration_ms {
            self.durations.push(ms);
        }
    }

    /// The figures.
    pub(crate) fn finish(mut self) -> JobStats {
        self.durations.sort_unstable();
        self.stats.p50_ms = percentile(&self.durations, 50);
        self.stats.p95_ms = percentile(&self.durations, 95);
        self.stats
    }
}

/// The newest run of each of `jobs`, one [`LogStore::query`] each: the port's default
/// `last_runs`, and the fallback of adapters whose server lacks their one-query form.
///
/// # Errors
/// `Unavailable`.
pub(crate) async fn last_runs_one_query_each<S: LogStore + ?Sized>(
    store: &S,
    jobs: &[JobName],
) -> Result<HashMap<JobName, RunRecord>, BackendError> {
    let mut found = HashMap::with_capacity(jobs.len());
    for job in jobs {
        let query = RunQuery {
            filter: RunFilter { job: Some(job.clone()), ..RunFilter::default() },
            after: None,
            skip: 0,
            limit: 1,
        };
        if let Some(run) = store.query(&query).await?.runs.into_iter().next() {
            found.insert(job.clone(), run);
        }
    }
    Ok(found)
}

/// One run as the admin page's charts see it (README "Pictures"): no output, no command.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunPoint {
    /// Run id (the click-through target).
    pub id: RunId,
    /// Its status.
    pub status: RunStatus,
    /// Why it ran.
    pub trigger: crate::domain::Trigger,
    /// The tick it is for.
    pub scheduled_at: DateTime<Utc>,
    /// [`RunRecord::start_time`].
    pub start: DateTime<Utc>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Wall time, ms, once it ended.
    pub duration_ms: Option<u64>,
    /// The last tick a `missed` summary covers (parsed from its `err`); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_until: Option<DateTime<Utc>>,
}

impl RunPoint {
    /// The point of `run`.
    pub fn of(run: &RunRecord) -> Self {
        Self {
            id: run.id.clone(),
            status: run.status,
            trigger: run.trigger,
            scheduled_at: run.scheduled_at,
            start: run.start_time(),
            attempt: run.attempt,
            duration_ms: run.duration_ms,
            missed_until: (run.status == RunStatus::Missed).then(|| missed_last_tick(&run.err)).flatten(),
        }
    }
}

/// The last tick of a `missed` summary, from its `err` (`missed 3 tick(s) from A to B: why`,
/// as the scheduler writes it).
pub fn missed_last_tick(err: &str) -> Option<DateTime<Utc>> {
    let rest = err.strip_prefix("missed ")?;
    let (_, after_to) = rest.split_once(" to ")?;
    let last = after_to.split_once(": ").map_or(after_to, |(t, _)| t);
    DateTime::parse_from_rfc3339(last.trim()).ok().map(|t| t.with_timezone(&Utc))
}

/// Runs of one job that started in one time bucket, aggregated in the store (README "Pictures").
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunBucket {
    /// Start of the bucket (runs started at or after it, before the next bucket).
    pub start: DateTime<Utc>,
    /// Runs in the bucket, per status.
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u64>,
    /// Final runs with a duration.
    pub timed: u64,
    /// Median duration of those, ms (nearest rank).
    pub p50_ms: Option<u64>,
    /// 95th percentile, ms (nearest rank).
    pub p95_ms: Option<u64>,
    /// Longest, ms.
    pub max_ms: Option<u64>,
}

/// Accumulates [`RunBucket`]s from runs, one at a time (adapters that cannot compute
/// percentiles per group in the store feed it their slim rows).
#[derive(Debug)]
pub(crate) struct BucketBuilder {
    from: DateTime<Utc>,
    bucket_ms: i64,
    buckets: BTreeMap<i64, (RunBucket, Vec<u64>)>,
}

impl BucketBuilder {
    /// Buckets of `bucket_ms` from `from`.
    pub(crate) fn new(from: DateTime<Utc>, bucket_ms: i64) -> Self {
        Self { from, bucket_ms: bucket_ms.max(1), buckets: BTreeMap::new() }
    }

    /// Counts one run started at `start`.
    pub(crate) fn add(&mut self, status: RunStatus, start: DateTime<Utc>, duration_ms: Option<u64>) {
        let offset = (start - self.from).num_milliseconds();
        if offset < 0 {
            return;
        }
        let index = offset / self.bucket_ms;
        let bucket_start = self.from + chrono::Duration::milliseconds(index * self.bucket_ms);
        let (bucket, durations) = self
            .buckets
            .entry(index)
            .or_insert_with(|| (RunBucket { start: bucket_start, ..RunBucket::default() }, Vec::new()));
        *bucket.counts.entry(status.as_str().to_owned()).or_insert(0) += 1;
        if let (true, Some(ms)) = (status.is_final(), duration_ms) {
            durations.push(ms);
        }
    }

    /// The non-empty buckets, oldest first.
    pub(crate) fn finish(self) -> Vec<RunBucket> {
        self.buckets
            .into_values()
            .map(|(mut bucket, mut durations)| {
                durations.sort_unstable();
                bucket.timed = durations.len() as u64;
                bucket.p50_ms = percentile(&durations, 50);
                bucket.p95_ms = percentile(&durations, 95);
                bucket.max_ms = durations.last().copied();
                bucket
            })
            .collect()
    }
}

/// Pages through [`LogStore::query`] for `filter`, newest first, handing each run to `each`
/// until it returns false or `limit` runs were seen: the port's default chart reads.
async fn scan<S: LogStore + ?Sized>(
    store: &S,
    filter: RunFilter,
    limit: usize,
    mut each: impl FnMut(&RunRecord) -> bool + Send,
) -> Result<(), BackendError> {
    let mut seen = 0usize;
    let mut after = None;
    loop {
        let query = RunQuery { filter: filter.clone(), after: after.take(), skip: 0, limit: 1000 };
        let page = store.query(&query).await?;
        let Some(last) = page.runs.last() else { return Ok(()) };
        after = Some(RunCursor { start_time: last.start_time(), id: last.id.clone() });
        let full = page.runs.len() >= 1000;
        for run in &page.runs {
            seen += 1;
            if !each(run) || seen >= limit {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// Run records.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Writes records with one call, upserting by run id: a record whose id is stored replaces
    /// it (a `running` record becomes final), so a retried batch never duplicates a run.
    /// Records are applied in slice order.
    ///
    /// # Errors
    /// `Unavailable` (or `Sqlite`/`Io`): nothing or part was written; retrying the whole batch is safe.
    async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError>;

    /// One run.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>, BackendError>;

    /// A page of run summaries (see [`summary`]: no output), newest start time first. Never
    /// reads outputs, so its cost does not grow with them.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn query(&self, query: &RunQuery) -> Result<RunPage, BackendError>;

    /// At most `max_bytes` of one run's output (cut back to a character boundary) and the size
    /// of the whole output as stored, in bytes; `None` when the run is unknown.
    ///
    /// The default reads the whole record with [`LogStore::get`]; adapters that keep outputs
    /// apart override it.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn read_output(&self, id: &RunId, max_bytes: usize) -> Result<Option<(String, u64)>, BackendError> {
        Ok(self.get(id).await?.map(|run| {
            let stored = run.output.len() as u64;
            let cut = run.output.as_bytes().get(..max_bytes).unwrap_or(run.output.as_bytes());
            (utf8_prefix(cut), stored)
        }))
    }

    /// The page [`LogStore::query`] returns, each run with its output, at most `output_budget`
    /// bytes of output in all: outputs are filled in page order, and the first one that does
    /// not fit, and every later one, is cut to what is left (possibly nothing), followed by
    /// [`budget_marker`], with `output_truncated` set. So a reply's size is bounded by the page
    /// size and the budget, whatever the runs printed; so is what is read, where the adapter
    /// can read a size without the output (the embedded store: the budget plus at most one
    /// whole output).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn query_with_output(&self, query: &RunQuery, output_budget: usize) -> Result<RunPage, BackendError> {
        let mut page = self.query(query).await?;
        let mut left = output_budget;
        for run in &mut page.runs {
            // A run deleted since the page was read (retention) keeps its empty output.
            let Some((output, stored)) = self.read_output(&run.id, left).await? else { continue };
            left = left.saturating_sub(output.len());
            let shown = output.len() as u64;
            run.output = output;
            if shown < stored {
                run.output.push_str(&budget_marker(stored - shown));
                run.output_truncated = true;
            }
        }
        Ok(page)
    }

    /// The newest run (by start time, then id) of each of `jobs` that has one, as summaries
    /// (see [`summary`]). One store round trip (or a few, for thousands of jobs) however
    /// many jobs are asked for, where the store allows it.
    ///
    /// The default asks [`LogStore::query`] once per job; adapters override it.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn last_runs(&self, jobs: &[JobName]) -> Result<HashMap<JobName, RunRecord>, BackendError> {
        last_runs_one_query_each(self, jobs).await
    }

    /// The runs of `job` that started in `[from, to)`, newest first, at most `limit`, as
    /// [`RunPoint`]s (the tick timeline, README "Pictures").
    ///
    /// The default pages through [`LogStore::query`]; adapters override it with a slim read.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn run_points(
        &self,
        job: &JobName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunPoint>, BackendError> {
        let filter = RunFilter { job: Some(job.clone()), from: Some(from), to: Some(to), ..RunFilter::default() };
        let mut points = Vec::new();
        scan(self, filter, limit, |run| {
            points.push(RunPoint::of(run));
            true
        })
        .await?;
        Ok(points)
    }

    /// The newest `per_job` runs of each of `jobs` (newest first), as [`RunPoint`]s: the jobs
    /// list's sparklines, one call for the whole list.
    ///
    /// The default asks [`LogStore::query`] once per job; the embedded store overrides it with
    /// one SQL query.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn recent_runs(
        &self,
        jobs: &[JobName],
        per_job: u32,
    ) -> Result<HashMap<JobName, Vec<RunPoint>>, BackendError> {
        let mut found = HashMap::with_capacity(jobs.len());
        for job in jobs {
            let query = RunQuery {
                filter: RunFilter { job: Some(job.clone()), ..RunFilter::default() },
                after: None,
                skip: 0,
                limit: per_job,
            };
            let runs = self.query(&query).await?.runs;
            if !runs.is_empty() {
                found.insert(job.clone(), runs.iter().map(RunPoint::of).collect());
            }
        }
        Ok(found)
    }

    /// `job`'s runs that started in `[from, to)`, in buckets of `bucket_ms` from `from` (only
    /// non-empty buckets, oldest first): counts per status and duration percentiles of the
    /// final runs, computed by the store (SQL in SQLite, a pipeline in MongoDB), no output read.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn run_buckets(
        &self,
        job: &JobName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_ms: i64,
    ) -> Result<Vec<RunBucket>, BackendError> {
        let filter = RunFilter { job: Some(job.clone()), from: Some(from), to: Some(to), ..RunFilter::default() };
        let mut builder = BucketBuilder::new(from, bucket_ms);
        scan(self, filter, usize::MAX, |run| {
            builder.add(run.status, run.start_time(), run.duration_ms);
            true
        })
        .await?;
        Ok(builder.finish())
    }

    /// Runs per worker that started at or after `since` (runs that never started, such as
    /// `skipped` and `missed`, are not counted): the fleet view's load.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn runs_per_worker(&self, since: DateTime<Utc>) -> Result<BTreeMap<WorkerId, u64>, BackendError> {
        let filter = RunFilter { from: Some(since), ..RunFilter::default() };
        let mut counts = BTreeMap::new();
        scan(self, filter, usize::MAX, |run| {
            if !matches!(run.status, RunStatus::Skipped | RunStatus::Missed | RunStatus::Superseded) {
                *counts.entry(run.worker.clone()).or_insert(0) += 1;
            }
            true
        })
        .await?;
        Ok(counts)
    }

    /// How many runs match.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn count(&self, filter: &RunFilter) -> Result<u64, BackendError>;

    /// Figures for one job over runs started at or after `since`, computed in the store (no
    /// output is read), without holding back writers.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn stats(&self, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError>;

    /// Deletes runs that started before `before`; returns how many.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError>;

    /// Applies `policy` at `now`: deletes each job's runs that started more than its retention
    /// days before `now` (runs of jobs without an override, including deleted jobs and runs the
    /// seed wrote, follow `default_days`; 0 = keep). Stores that expire records themselves (a
    /// MongoDB TTL index) also use `policy` for the records they write from now on. Returns
    /// how many runs were deleted.
    ///
    /// The default honours only `default_days`; an adapter must override it to honour per-job
    /// overrides (the conformance suite checks that it does).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn apply_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<u64, BackendError> {
        match policy.default_cutoff(now) {
            Some(before) => self.purge_before(before).await,
            None => Ok(0),
        }
    }

    /// Cheap reachability check for readiness.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn ping(&self) -> Result<(), BackendError>;
}
