//! Embedded log store: run records in a SQLite file (`runs.sqlite3` under `data_dir`).
//!
//! Owns the `runs` table (one row per run id: the columns queries filter, sort and aggregate on
//! — `job`, `status`, `worker`, `start_ms` = [`RunRecord::start_time`] in ms, `duration_ms` —
//! beside the record without its output as JSON) and the `run_outputs` table (the output as a
//! BLOB, by run id, only for runs that printed something). Listings, counts, last runs and
//! stats never touch `run_outputs`; one run's page and `/job/log` read it (the latter under a
//! byte budget). Pages are ordered by (`start_ms` DESC, `id` DESC); a cursor selects rows
//! strictly after its position in that order, so pages stay stable while new runs arrive.
//!
//! Writes go through one connection behind a mutex; reads through a second, read-only one, so
//! a long read (stats over a year) never holds back the log writer (WAL lets readers and a
//! writer proceed together). The schema is a list of [`MIGRATIONS`] counted by
//! `PRAGMA user_version`, applied in order at open; a database from before the split has its
//! outputs moved apart on first open. Leaves batching, spooling and retries to `LogBatchActor`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::{open_sqlite, sql_err, with_locked};
use crate::backend::logs::{
    failure_statuses, missed_last_tick, percentile_index, summary, utf8_prefix, JobStats, LogStore, RetentionPolicy,
    RunBucket, RunCursor, RunFilter, RunPage, RunPoint, RunQuery,
};
use crate::backend::BackendError;
use crate::domain::{JobName, RunId, RunRecord, WorkerId};

const BACKEND: &str = "embedded log store";

/// Most runs per page.
pub(crate) const MAX_PAGE: u32 = 1000;

/// The schema, one step per entry, applied in order inside one transaction each; the database's
/// `user_version` is the number applied. Append new steps; never edit an applied one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "runs table",
        "CREATE TABLE IF NOT EXISTS runs (
             id TEXT PRIMARY KEY,
             job TEXT NOT NULL,
             status TEXT NOT NULL,
             worker TEXT NOT NULL,
             start_ms INTEGER NOT NULL,
             json TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS runs_job_start ON runs (job, start_ms DESC, id DESC);
         CREATE INDEX IF NOT EXISTS runs_status_start ON runs (status, start_ms DESC, id DESC);
         CREATE INDEX IF NOT EXISTS runs_start ON runs (start_ms DESC, id DESC);",
    ),
    (
        "outputs apart from the runs",
        "CREATE TABLE run_outputs (id TEXT PRIMARY KEY, output BLOB NOT NULL);
         INSERT INTO run_outputs (id, output)
             SELECT id, CAST(json_extract(json, '$.output') AS BLOB) FROM runs
             WHERE json_extract(json, '$.output') != '';
         UPDATE runs SET json = json_set(json, '$.output', '') WHERE json_extract(json, '$.output') != '';
         CREATE TRIGGER runs_delete_output AFTER DELETE ON runs
             BEGIN DELETE FROM run_outputs WHERE id = old.id; END;",
    ),
    (
        "duration column for stats",
        "ALTER TABLE runs ADD COLUMN duration_ms INTEGER;
         UPDATE runs SET duration_ms = json_extract(json, '$.duration_ms');",
    ),
    (
        "job version column",
        "ALTER TABLE runs ADD COLUMN job_version INTEGER;
         UPDATE runs SET job_version = json_extract(json, '$.job_version');",
    ),
    (
        "process columns of live runs",
        "ALTER TABLE runs ADD COLUMN pgid INTEGER;
         ALTER TABLE runs ADD COLUMN proc_start_ticks INTEGER;",
    ),
];

/// Applies the [`MIGRATIONS`] `conn`'s database lacks.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), BackendError> {
    let shown = path.display().to_string();
    let applied: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err(format!("cannot read the schema version of {shown}")))?;
    let existing: bool = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs')", [], |r| {
            r.get(0)
        })
        .map_err(sql_err(format!("cannot read the schema of {shown}")))?;
    for (version, (name, sql)) in MIGRATIONS.iter().enumerate().skip(usize::try_from(applied).unwrap_or(0)) {
        let started = std::time::Instant::now();
        let tx = conn.transaction().map_err(sql_err(format!("cannot begin migration {name:?} of {shown}")))?;
        tx.execute_batch(sql).map_err(sql_err(format!("cannot apply migration {name:?} to {shown}")))?;
        tx.pragma_update(None, "user_version", version as i64 + 1)
            .map_err(sql_err(format!("cannot record migration {name:?} of {shown}")))?;
        tx.commit().map_err(sql_err(format!("cannot commit migration {name:?} of {shown}")))?;
        if existing {
            log::info!(
                "Embedded log store migrated. path={shown} step={name:?} version={} ms={}",
                version + 1,
                started.elapsed().as_millis()
            );
        }
    }
    Ok(())
}

/// Run records of a single node, in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLogStore {
    /// The one writing connection.
    conn: Arc<Mutex<Connection>>,
    /// A read-only connection: reads never wait for the writer's mutex.
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteLogStore {
    /// Opens (or creates) the store at `path`, migrating an older schema.
    ///
    /// # Errors
    /// `Io`/`Sqlite` when the file cannot be created, opened or migrated.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let mut conn = open_sqlite(path, super::Durability::Normal)?;
        migrate(&mut conn, path)?;
        let reader = open_sqlite(path, super::Durability::Normal)?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(sql_err(format!("cannot make the read connection of {} read-only", path.display())))?;
        log::info!("Embedded log store opened. path={}", path.display());
        Ok(Self { conn: Arc::new(Mutex::new(conn)), reader: Arc::new(Mutex::new(reader)), path: path.to_owned() })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parse_record(id: &str, json: &str) -> Result<RunRecord, BackendError> {
    serde_json::from_str(json)
        .map_err(|e| BackendError::Corrupt { backend: BACKEND, message: format!("run {id} does not parse: {e}") })
}

/// `WHERE ...` for `filter` (and `after`), with its parameters in order.
fn where_clause(filter: &RunFilter, after: Option<&RunCursor>) -> (String, Vec<Value>) {
    let mut terms: Vec<&str> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(job) = &filter.job {
        terms.push("job = ?");
        params.push(Value::Text(job.as_str().to_owned()));
    }
    if let Some(status) = filter.status {
        terms.push("status = ?");
        params.push(Value::Text(status.as_str().to_owned()));
    }
    if let Some(worker) = &filter.worker {
        terms.push("worker = ?");
        params.push(Value::Text(worker.0.clone()));
    }
    if let Some(from) = filter.from {
        terms.push("start_ms >= ?");
        params.push(Value::Integer(from.timestamp_millis()));
    }
    if let Some(to) = filter.to {
        terms.push("start_ms < ?");
        params.push(Value::Integer(to.timestamp_millis()));
    }
    if let Some(cursor) = after {
        let ms = cursor.start_time.timestamp_millis();
        terms.push("(start_ms < ? OR (start_ms = ? AND id < ?))");
        params.extend([Value::Integer(ms), Value::Integer(ms), Value::Text(cursor.id.0.clone())]);
    }
    if terms.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", terms.join(" AND ")), params)
    }
}

fn query_locked(conn: &mut Connection, query: &RunQuery) -> Result<RunPage, BackendError> {
    let limit = query.limit.clamp(1, MAX_PAGE);
    let (clause, mut params) = where_clause(&query.filter, query.after.as_ref());
    params.push(Value::Integer(i64::from(limit)));
    params.push(Value::Integer(i64::try_from(query.skip).unwrap_or(i64::MAX)));
    let sql = format!("SELECT id, start_ms, json FROM runs {clause} ORDER BY start_ms DESC, id DESC LIMIT ? OFFSET ?");
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err("cannot prepare a run query"))?;
    let rows: Vec<(String, i64, String)> = stmt
        .query_map(rusqlite::params_from_iter(params), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql_err("cannot query runs"))?
        .collect::<Result<_, _>>()
        .map_err(sql_err("cannot read runs"))?;
    // The cursor comes from the last row's columns, so a skipped unreadable row keeps paging right.
    let next_cursor = match rows.last() {
        Some((id, start_ms, _)) if rows.len() == limit as usize => DateTime::from_timestamp_millis(*start_ms)
            .map(|start_time| RunCursor { start_time, id: RunId(id.clone()) }.encode()),
        _ => None,
    };
    let runs = rows
        .into_iter()
        .filter_map(|(id, _, json)| match parse_record(&id, &json) {
            Ok(record) => Some(record),
            Err(e) => {
                log::warn!("Skipping a stored run that does not parse. id={id} error={e}");
                None
            }
        })
        .collect();
    Ok(RunPage { runs, next_cursor })
}

/// `status IN (...)` of the statuses [`JobStats`] counts as failures.
fn failure_sql() -> String {
    let names: Vec<String> = failure_statuses().map(|s| format!("'{s}'")).collect();
    format!("status IN ({})", names.join(", "))
}

/// Stats with SQL aggregates over the small `runs` rows: one pass for the counts and last
/// times, one index-ordered step to each percentile.
fn stats_locked(conn: &mut Connection, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError> {
    let context = || format!("cannot compute stats of job {job}");
    let window = "job = ?1 AND start_ms >= ?2 AND status != 'running'";
    let failed = failure_sql();
    let sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(status = 'succeeded'), 0), COALESCE(SUM({failed}), 0),
                MAX(CASE WHEN status = 'succeeded' THEN start_ms END), MAX(CASE WHEN {failed} THEN start_ms END),
                COUNT(duration_ms)
         FROM runs WHERE {window}"
    );
    let params = rusqlite::params![job.as_str(), since.timestamp_millis()];
    let (runs, succeeded, failures, last_success, last_failure, timed): (i64, i64, i64, Option<i64>, Option<i64>, i64) =
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            })
            .map_err(sql_err(context()))?;
    let timed = u64::try_from(timed).unwrap_or(0);
    let nth = |p: usize| -> Result<Option<u64>, BackendError> {
        let Some(offset) = percentile_index(timed, p) else { return Ok(None) };
        let sql = format!(
            "SELECT duration_ms FROM runs WHERE {window} AND duration_ms IS NOT NULL ORDER BY duration_ms LIMIT 1 OFFSET ?3"
        );
        let ms: Option<i64> = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row(rusqlite::params![job.as_str(), since.timestamp_millis(), offset as i64], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_err(context()))?;
        Ok(ms.and_then(|ms| u64::try_from(ms).ok()))
    };
    let time = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
    Ok(JobStats {
        runs: u64::try_from(runs).unwrap_or(0),
        succeeded: u64::try_from(succeeded).unwrap_or(0),
        failed: u64::try_from(failures).unwrap_or(0),
        p50_ms: nth(50)?,
        p95_ms: nth(95)?,
        last_success: time(last_success),
        last_failure: time(last_failure),
    })
}

/// The newest run of each job in `jobs`: for each name, one step down the `(job, start_ms DESC,
/// id DESC)` index (a `ROW_NUMBER() OVER (PARTITION BY job ...)` window would number every
/// run of those jobs first; this costs one index probe per job whatever the history).
fn last_runs_locked(conn: &mut Connection, jobs: &[JobName]) -> Result<HashMap<JobName, RunRecord>, BackendError> {
    let names = serde_json::to_string(&jobs.iter().map(JobName::as_str).collect::<Vec<_>>())
        .map_err(|e| BackendError::Corrupt { backend: BACKEND, message: format!("job names: {e}") })?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, json FROM runs WHERE id IN (
                 SELECT (SELECT r.id FROM runs r WHERE r.job = j.value ORDER BY r.start_ms DESC, r.id DESC LIMIT 1)
                 FROM json_each(?1) j)",
        )
        .map_err(sql_err("cannot prepare the last-runs query"))?;
    let rows: Vec<(String, String)> = stmt
        .query_map([names], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sql_err("cannot query last runs"))?
        .collect::<Result<_, _>>()
        .map_err(sql_err("cannot read last runs"))?;
    let mut found = HashMap::with_capacity(rows.len());
    for (id, json) in rows {
        match parse_record(&id, &json) {
            Ok(run) => {
                found.insert(run.job.clone(), run);
            }
            Err(e) => log::warn!("Skipping a stored run that does not parse. id={id} error={e}"),
        }
    }
    Ok(found)
}

/// The columns of a [`RunPoint`] row, in the order [`POINT_COLUMNS`] selects them.
const POINT_COLUMNS: &str = "r.id, r.status, r.duration_ms, r.start_ms, json_extract(r.json, '$.scheduled_at'),
     json_extract(r.json, '$.attempt'), json_extract(r.json, '$.trigger'),
     CASE WHEN r.status = 'missed' THEN json_extract(r.json, '$.err') END, r.job";

/// A [`RunPoint`] (and its job) from a row of [`POINT_COLUMNS`]; `None` for a row that does not read.
fn point_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(String, RunPoint)>> {
    let id: String = r.get(0)?;
    let status: String = r.get(1)?;
    let duration: Option<i64> = r.get(2)?;
    let start_ms: i64 = r.get(3)?;
    let scheduled: Option<String> = r.get(4)?;
    let attempt: Option<i64> = r.get(5)?;
    let trigger: Option<String> = r.get(6)?;
    let err: Option<String> = r.get(7)?;
    let job: String = r.get(8)?;
    let (Some(status), Some(start), Some(scheduled_at)) = (
        crate::domain::RunStatus::parse(&status),
        DateTime::from_timestamp_millis(start_ms),
        scheduled.and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|t| t.with_timezone(&Utc)),
    ) else {
        log::warn!("Skipping a stored run that does not read as a chart point. id={id}");
        return Ok(None);
    };
    Ok(Some((
        job,
        RunPoint {
            id: RunId(id),
            status,
            trigger: crate::domain::Trigger::parse_or_schedule(trigger.as_deref().unwrap_or("")),
            scheduled_at,
            start,
            attempt: attempt.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
            duration_ms: duration.and_then(|d| u64::try_from(d).ok()),
            missed_until: err.as_deref().and_then(missed_last_tick),
        },
    )))
}

/// `job`'s runs started in `[from, to)`, newest first, at most `limit`: one index range read.
fn run_points_locked(
    conn: &mut Connection,
    job: &JobName,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<RunPoint>, BackendError> {
    let sql = format!(
        "SELECT {POINT_COLUMNS} FROM runs r WHERE r.job = ?1 AND r.start_ms >= ?2 AND r.start_ms < ?3
         ORDER BY r.start_ms DESC, r.id DESC LIMIT ?4"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err("cannot prepare the run points query"))?;
    let rows: Vec<Option<(String, RunPoint)>> = stmt
        .query_map(rusqlite::params![job.as_str(), from.timestamp_millis(), to.timestamp_millis(), limit], point_row)
        .map_err(sql_err(format!("cannot query the run points of job {job}")))?
        .collect::<Result<_, _>>()
        .map_err(sql_err(format!("cannot read the run points of job {job}")))?;
    Ok(rows.into_iter().flatten().map(|(_, p)| p).collect())
}

/// The newest `per_job` runs of each of `jobs`: one query, `per_job` index steps per job.
fn recent_runs_locked(
    conn: &mut Connection,
    jobs: &[JobName],
    per_job: u32,
) -> Result<HashMap<JobName, Vec<RunPoint>>, BackendError> {
    let names = serde_json::to_string(&jobs.iter().map(JobName::as_str).collect::<Vec<_>>())
        .map_err(|e| BackendError::Corrupt { backend: BACKEND, message: format!("job names: {e}") })?;
    let sql = format!(
        "SELECT {POINT_COLUMNS} FROM json_each(?1) j JOIN runs r ON r.id IN (
             SELECT x.id FROM runs x WHERE x.job = j.value ORDER BY x.start_ms DESC, x.id DESC LIMIT ?2)
         ORDER BY r.job, r.start_ms DESC, r.id DESC"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err("cannot prepare the recent runs query"))?;
    let rows: Vec<Option<(String, RunPoint)>> = stmt
        .query_map(rusqlite::params![names, i64::from(per_job)], point_row)
        .map_err(sql_err("cannot query recent runs"))?
        .collect::<Result<_, _>>()
        .map_err(sql_err("cannot read recent runs"))?;
    let mut found: HashMap<JobName, Vec<RunPoint>> = HashMap::new();
    for (job, point) in rows.into_iter().flatten() {
        if let Ok(job) = JobName::parse(&job) {
            found.entry(job).or_default().push(point);
        }
    }
    Ok(found)
}

/// A bucket's duration figures as SQL returns them: bucket, timed runs, max, p50, p95.
type DurationRow = (i64, i64, Option<i64>, Option<i64>, Option<i64>);

/// Buckets of `job`'s runs in SQL: one `GROUP BY` for the counts per status, one window query
/// (`ROW_NUMBER` over each bucket ordered by duration) for the nearest-rank percentiles.
fn run_buckets_locked(
    conn: &mut Connection,
    job: &JobName,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_ms: i64,
) -> Result<Vec<RunBucket>, BackendError> {
    let context = || format!("cannot compute the run buckets of job {job}");
    let params = rusqlite::params![job.as_str(), from.timestamp_millis(), to.timestamp_millis(), bucket_ms.max(1)];
    let mut buckets: BTreeMap<i64, RunBucket> = BTreeMap::new();
    let new_bucket = |b: i64| RunBucket {
        start: from + chrono::Duration::milliseconds(b * bucket_ms.max(1)),
        ..RunBucket::default()
    };
    let counts: Vec<(i64, String, i64)> = conn
        .prepare_cached(
            "SELECT (start_ms - ?2) / ?4 AS b, status, COUNT(*) FROM runs
             WHERE job = ?1 AND start_ms >= ?2 AND start_ms < ?3 GROUP BY b, status",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err(context()))?;
    for (b, status, n) in counts {
        buckets.entry(b).or_insert_with(|| new_bucket(b)).counts.insert(status, u64::try_from(n).unwrap_or(0));
    }
    let durations: Vec<DurationRow> = conn
        .prepare_cached(
            "WITH d AS (
                 SELECT (start_ms - ?2) / ?4 AS b, duration_ms AS ms,
                        ROW_NUMBER() OVER (PARTITION BY (start_ms - ?2) / ?4 ORDER BY duration_ms) AS rn,
                        COUNT(*) OVER (PARTITION BY (start_ms - ?2) / ?4) AS n
                 FROM runs WHERE job = ?1 AND start_ms >= ?2 AND start_ms < ?3
                     AND status != 'running' AND duration_ms IS NOT NULL)
             SELECT b, MAX(n), MAX(ms), MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN ms END),
                    MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN ms END)
             FROM d GROUP BY b",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err(context()))?;
    let ms = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    for (b, n, max, p50, p95) in durations {
        let bucket = buckets.entry(b).or_insert_with(|| new_bucket(b));
        bucket.timed = u64::try_from(n).unwrap_or(0);
        bucket.max_ms = ms(max);
        bucket.p50_ms = ms(p50);
        bucket.p95_ms = ms(p95);
    }
    Ok(buckets.into_values().collect())
}

/// Runs per worker started at or after `since` (those that ran: not skipped, missed or superseded).
fn runs_per_worker_locked(
    conn: &mut Connection,
    since: DateTime<Utc>,
) -> Result<BTreeMap<WorkerId, u64>, BackendError> {
    let rows: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT worker, COUNT(*) FROM runs WHERE start_ms >= ?1
                 AND status NOT IN ('skipped', 'missed', 'superseded') GROUP BY worker",
        )
        .and_then(|mut stmt| {
            stmt.query_map([since.timestamp_millis()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql_err("cannot count runs per worker"))?;
    Ok(rows.into_iter().map(|(w, n)| (WorkerId(w), u64::try_from(n).unwrap_or(0))).collect())
}

/// Deletes runs past `policy` at `now`, one statement per overridden job and one for the rest.
fn retention_locked(conn: &mut Connection, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<u64, BackendError> {
    let tx = conn.transaction().map_err(sql_err("cannot begin retention"))?;
    let mut deleted = 0;
    for (job, cutoff) in policy.job_cutoffs(now) {
        deleted += tx
            .execute(
                "DELETE FROM runs WHERE job = ?1 AND start_ms < ?2",
                rusqlite::params![job.as_str(), cutoff.timestamp_millis()],
            )
            .map_err(sql_err(format!("cannot purge old runs of job {job}")))?;
    }
    if let Some(cutoff) = policy.default_cutoff(now) {
        tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS retention_override (job TEXT PRIMARY KEY); DELETE FROM retention_override;")
            .map_err(sql_err("cannot prepare retention"))?;
        {
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO retention_override (job) VALUES (?1)")
                .map_err(sql_err("cannot prepare retention"))?;
            for job in policy.per_job.keys() {
                insert.execute([job.as_str()]).map_err(sql_err("cannot prepare retention"))?;
            }
        }
        deleted += tx
            .execute(
                "DELETE FROM runs WHERE start_ms < ?1 AND job NOT IN (SELECT job FROM retention_override)",
                [cutoff.timestamp_millis()],
            )
            .map_err(sql_err("cannot purge old runs"))?;
    }
    tx.commit().map_err(sql_err("cannot commit retention"))?;
    Ok(deleted as u64)
}

/// One run's row: its filter columns, its summary JSON and its output.
struct Row {
    id: String,
    job: String,
    status: &'static str,
    worker: String,
    start_ms: i64,
    duration_ms: Option<i64>,
    json: String,
    output: Vec<u8>,
}

impl Row {
    fn of(r: &RunRecord) -> Result<Self, BackendError> {
        let json = serde_json::to_string(&summary(r)).map_err(|e| BackendError::Corrupt {
            backend: BACKEND,
            message: format!("run {} cannot be serialized: {e}", r.id),
        })?;
        Ok(Self {
            id: r.id.0.clone(),
            job: r.job.as_str().to_owned(),
            status: r.status.as_str(),
            worker: r.worker.0.clone(),
            start_ms: r.start_time().timestamp_millis(),
            duration_ms: r.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
            json,
            output: r.output.as_bytes().to_vec(),
        })
    }
}

#[async_trait]
impl LogStore for SqliteLogStore {
    async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = records.iter().map(Row::of).collect::<Result<Vec<_>, _>>()?;
        let processes: Vec<(String, Option<i32>, Option<i64>)> = records
            .iter()
            .filter(|r| r.pgid.is_some())
            .map(|r| (r.id.0.clone(), r.pgid, r.proc_start_ticks.and_then(|t| i64::try_from(t).ok())))
            .collect();
        with_locked(&self.conn, BACKEND, move |conn| {
            let n = rows.len();
            let tx = conn.transaction().map_err(sql_err(format!("cannot begin a batch of {n} runs")))?;
            {
                // A final record is never replaced by a `running` one (a late retry of the
                // start record must not resurrect a finished run); its output goes with it.
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO runs (id, job, status, worker, start_ms, duration_ms, json, job_version)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, json_extract(?7, '$.job_version'))
                         ON CONFLICT(id) DO UPDATE SET job = excluded.job, status = excluded.status,
                             worker = excluded.worker, start_ms = excluded.start_ms,
                             duration_ms = excluded.duration_ms, json = excluded.json,
                             job_version = excluded.job_version
                         WHERE runs.status = 'running' OR excluded.status != 'running'",
                    )
                    .map_err(sql_err("cannot prepare the run upsert"))?;
                let mut put_output = tx
                    .prepare_cached(
                        "INSERT INTO run_outputs (id, output) VALUES (?1, ?2)
                         ON CONFLICT(id) DO UPDATE SET output = excluded.output",
                    )
                    .map_err(sql_err("cannot prepare the output upsert"))?;
                let mut drop_output = tx
                    .prepare_cached("DELETE FROM run_outputs WHERE id = ?1")
                    .map_err(sql_err("cannot prepare the output delete"))?;
                for r in &rows {
                    let changed = upsert
                        .execute(rusqlite::params![r.id, r.job, r.status, r.worker, r.start_ms, r.duration_ms, r.json])
                        .map_err(sql_err(format!("cannot write run {}", r.id)))?;
                    if changed == 0 {
                        continue;
                    }
                    if r.output.is_empty() {
                        drop_output.execute([&r.id]).map_err(sql_err(format!("cannot write run {}", r.id)))?;
                    } else {
                        put_output
                            .execute(rusqlite::params![r.id, r.output])
                            .map_err(sql_err(format!("cannot write the output of run {}", r.id)))?;
                    }
                }
                let mut processes_stmt = tx
                    .prepare_cached("UPDATE runs SET pgid = ?2, proc_start_ticks = ?3 WHERE id = ?1")
                    .map_err(sql_err("cannot prepare the process columns update"))?;
                for (id, pgid, ticks) in &processes {
                    processes_stmt
                        .execute(rusqlite::params![id, pgid, ticks])
                        .map_err(sql_err(format!("cannot write the process of run {id}")))?;
                }
            }
            tx.commit().map_err(sql_err(format!("cannot commit a batch of {n} runs")))
        })
        .await
    }

    async fn get(&self, id: &RunId) -> Result<Option<RunRecord>, BackendError> {
        let id = id.clone();
        with_locked(&self.reader, BACKEND, move |conn| {
            let row: Option<(String, Option<Vec<u8>>)> = conn
                .query_row(
                    "SELECT r.json, o.output FROM runs r LEFT JOIN run_outputs o ON o.id = r.id WHERE r.id = ?1",
                    [&id.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql_err(format!("cannot read run {id}")))?;
            let Some((json, output)) = row else { return Ok(None) };
            let mut run = parse_record(&id.0, &json)?;
            if let Some(output) = output {
                run.output = utf8_prefix(&output);
            }
            Ok(Some(run))
        })
        .await
    }

    async fn read_output(&self, id: &RunId, max_bytes: usize) -> Result<Option<(String, u64)>, BackendError> {
        let id = id.clone();
        // SQLite values are at most 1 GiB; a larger length overflows substr.
        let max = i64::try_from(max_bytes).unwrap_or(i64::MAX).min(1 << 30);
        with_locked(&self.reader, BACKEND, move |conn| {
            // On a BLOB, substr and length count bytes; length alone does not load the value
            // (SQLite reads it from the record header), substr loads it whole: once the budget
            // is spent, only the size is read.
            let sql = if max == 0 {
                "SELECT NULL, length(o.output) FROM runs r LEFT JOIN run_outputs o ON o.id = r.id WHERE r.id = ?1 AND ?2 = 0"
            } else {
                "SELECT substr(o.output, 1, ?2), length(o.output)
                 FROM runs r LEFT JOIN run_outputs o ON o.id = r.id WHERE r.id = ?1"
            };
            let row: Option<(Option<Vec<u8>>, Option<i64>)> = conn
                .query_row(
                    sql,
                    rusqlite::params![&id.0, max],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql_err(format!("cannot read the output of run {id}")))?;
            Ok(row.map(|(head, len)| {
                (utf8_prefix(&head.unwrap_or_default()), len.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
            }))
        })
        .await
    }

    async fn query(&self, query: &RunQuery) -> Result<RunPage, BackendError> {
        let query = query.clone();
        with_locked(&self.reader, BACKEND, move |conn| query_locked(conn, &query)).await
    }

    async fn last_runs(&self, jobs: &[JobName]) -> Result<HashMap<JobName, RunRecord>, BackendError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let jobs = jobs.to_vec();
        with_locked(&self.reader, BACKEND, move |conn| last_runs_locked(conn, &jobs)).await
    }

    async fn run_points(
        &self,
        job: &JobName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunPoint>, BackendError> {
        let job = job.clone();
        with_locked(&self.reader, BACKEND, move |conn| run_points_locked(conn, &job, from, to, limit)).await
    }

    async fn recent_runs(
        &self,
        jobs: &[JobName],
        per_job: u32,
    ) -> Result<HashMap<JobName, Vec<RunPoint>>, BackendError> {
        if jobs.is_empty() || per_job == 0 {
            return Ok(HashMap::new());
        }
        let jobs = jobs.to_vec();
        with_locked(&self.reader, BACKEND, move |conn| recent_runs_locked(conn, &jobs, per_job)).await
    }

    async fn run_buckets(
        &self,
        job: &JobName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_ms: i64,
    ) -> Result<Vec<RunBucket>, BackendError> {
        let job = job.clone();
        with_locked(&self.reader, BACKEND, move |conn| run_buckets_locked(conn, &job, from, to, bucket_ms)).await
    }

    async fn runs_per_worker(&self, since: DateTime<Utc>) -> Result<BTreeMap<WorkerId, u64>, BackendError> {
        with_locked(&self.reader, BACKEND, move |conn| runs_per_worker_locked(conn, since)).await
    }

    async fn count(&self, filter: &RunFilter) -> Result<u64, BackendError> {
        let filter = filter.clone();
        with_locked(&self.reader, BACKEND, move |conn| {
            let (clause, params) = where_clause(&filter, None);
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM runs {clause}"), rusqlite::params_from_iter(params), |r| {
                    r.get(0)
                })
                .map_err(sql_err("cannot count runs"))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn stats(&self, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError> {
        let job = job.clone();
        with_locked(&self.reader, BACKEND, move |conn| stats_locked(conn, &job, since)).await
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        with_locked(&self.conn, BACKEND, move |conn| {
            let n = conn
                .execute("DELETE FROM runs WHERE start_ms < ?1", [before.timestamp_millis()])
                .map_err(sql_err("cannot purge old runs"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn apply_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<u64, BackendError> {
        let policy = policy.clone();
        with_locked(&self.conn, BACKEND, move |conn| retention_locked(conn, &policy, now)).await
    }

    async fn ping(&self) -> Result<(), BackendError> {
        with_locked(&self.reader, BACKEND, |conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(sql_err("ping failed"))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;
    use crate::backend::logs::summary;
    use crate::domain::RunStatus;

    fn store(dir: &tempfile::TempDir) -> Arc<dyn LogStore> {
        Arc::new(SqliteLogStore::open(&dir.path().join("runs.sqlite3")).expect("open"))
    }

    #[tokio::test]
    async fn passes_idempotent_append_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_append_is_idempotent(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_upsert_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_running_becomes_final(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_filter_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_filters(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_pagination_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_pagination(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_stats_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_stats(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_purge_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_purge(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_retention_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_retention(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_whole_suite_on_one_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::log_store_suite(store(&dir)).await;
    }

    #[tokio::test]
    async fn runs_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = JobName::parse("kept").expect("name");
        let record = conformance::sample_run(&job, RunStatus::Succeeded, "w", Utc::now(), Some(5));
        store(&dir).append_batch(std::slice::from_ref(&record)).await.expect("append");
        let reopened = store(&dir);
        assert_eq!(reopened.get(&record.id).await.expect("get"), Some(record));
        reopened.ping().await.expect("ping");
    }

    #[tokio::test]
    async fn a_database_from_before_the_split_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runs.sqlite3");
        let job = JobName::parse("old").expect("name");
        let mut old = conformance::sample_run(&job, RunStatus::Succeeded, "w", Utc::now(), Some(7));
        old.output = "printed before the upgrade\n".into();
        {
            // The schema and rows as the previous release wrote them (output inside the JSON).
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(MIGRATIONS[0].1).expect("old schema");
            conn.execute(
                "INSERT INTO runs (id, job, status, worker, start_ms, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    old.id.0,
                    job.as_str(),
                    "succeeded",
                    "w",
                    old.start_time().timestamp_millis(),
                    serde_json::to_string(&old).expect("json")
                ],
            )
            .expect("old row");
        }
        let logs = store(&dir);
        assert_eq!(logs.get(&old.id).await.expect("get"), Some(old.clone()), "the output moved, intact");
        let page = logs.query(&RunQuery { limit: 10, ..RunQuery::default() }).await.expect("query");
        assert_eq!(page.runs, vec![summary(&old)]);
        assert_eq!(logs.stats(&job, old.start_time()).await.expect("stats").p50_ms, Some(7), "durations backfilled");
        let conn = Connection::open(&path).expect("open");
        let json: String = conn.query_row("SELECT json FROM runs", [], |r| r.get(0)).expect("row");
        assert!(!json.contains("printed"), "the summary row no longer carries the output");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(logs);
        store(&dir).ping().await.expect("a migrated store reopens");
    }

    #[tokio::test]
    async fn purged_runs_take_their_outputs_along() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runs.sqlite3");
        let job = JobName::parse("gone").expect("name");
        let old =
            conformance::sample_run(&job, RunStatus::Succeeded, "w", Utc::now() - chrono::Duration::days(9), None);
        let logs = store(&dir);
        logs.append_batch(std::slice::from_ref(&old)).await.expect("append");
        assert_eq!(logs.purge_before(Utc::now() - chrono::Duration::days(1)).await.expect("purge"), 1);
        let conn = Connection::open(&path).expect("open");
        let left: i64 = conn.query_row("SELECT COUNT(*) FROM run_outputs", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        use crate::backend::logs::percentile;
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 95), Some(19));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3], 95), Some(3));
    }

    #[tokio::test]
    async fn old_databases_get_the_process_columns_and_running_records_fill_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runs.sqlite3");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE runs (id TEXT PRIMARY KEY, job TEXT NOT NULL, status TEXT NOT NULL,
                     worker TEXT NOT NULL, start_ms INTEGER NOT NULL, json TEXT NOT NULL);",
            )
            .expect("old schema");
        }
        let store = SqliteLogStore::open(&path).expect("migrates");
        drop(SqliteLogStore::open(&path).expect("a second open finds the columns"));
        let mut record = RunRecord::not_run(
            JobName::parse("j").expect("name"),
            "sleep 9".into(),
            RunStatus::Running,
            crate::domain::Trigger::Manual,
            Utc::now(),
            crate::domain::WorkerId("w".into()),
            crate::domain::Fence(1),
            String::new(),
        );
        record.pgid = Some(4242);
        record.proc_start_ticks = Some(987_654);
        store.append_batch(std::slice::from_ref(&record)).await.expect("append");
        let conn = Connection::open(&path).expect("open");
        let row: (Option<i64>, Option<i64>) = conn
            .query_row("SELECT pgid, proc_start_ticks FROM runs WHERE id = ?1", [&record.id.0], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("row");
        assert_eq!(row, (Some(4242), Some(987_654)));
        let back = store.get(&record.id).await.expect("get").expect("stored");
        assert_eq!((back.pgid, back.proc_start_ticks), (Some(4242), Some(987_654)));
    }
}
