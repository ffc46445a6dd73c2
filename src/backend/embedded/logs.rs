//! Embedded log store: run records in a SQLite file (`runs.sqlite3` under `data_dir`).
//!
//! One row per run id with the columns queries filter and sort on (`job`, `status`, `worker`,
//! `start_ms` = [`RunRecord::start_time`] in ms) beside the full record as JSON. Pages are
//! ordered by (`start_ms` DESC, `id` DESC); a cursor selects rows strictly after its position
//! in that order, so pages stay stable while new runs arrive.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::{open_sqlite, sql_err, with_locked};
use crate::backend::logs::{
    JobStats, LogStore, RetentionPolicy, RunCursor, RunFilter, RunPage, RunQuery, StatsBuilder,
};
use crate::backend::BackendError;
use crate::domain::{JobName, RunId, RunRecord, RunStatus};

const BACKEND: &str = "embedded log store";

/// Most runs per page.
pub(crate) const MAX_PAGE: u32 = 1000;

/// Run records of a single node, in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLogStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteLogStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// `Io`/`Sqlite` when the file cannot be created, opened or migrated.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let conn = open_sqlite(path, super::Durability::Normal)?;
        conn.execute_batch(
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
        )
        .map_err(sql_err(format!("cannot create the runs table in {}", path.display())))?;
        add_job_version_column(&conn)
            .map_err(sql_err(format!("cannot migrate the runs table in {}", path.display())))?;
        add_process_columns(&conn).map_err(sql_err(format!("cannot migrate the runs table in {}", path.display())))?;
        log::info!("Embedded log store opened. path={}", path.display());
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path: path.to_owned() })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Migration: databases made before runs recorded their job version get the column (older rows
/// keep it NULL).
fn add_job_version_column(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has: bool = conn.prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = 'job_version'")?.exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE runs ADD COLUMN job_version INTEGER")?;
        log::info!("Embedded log store migrated: runs now record their job version.");
    }
    Ok(())
}

/// Migration: the live run's process group and start time as columns (`pgid`,
/// `proc_start_ticks`, NULL when unknown), added to databases created before them.
fn add_process_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('runs')")?;
    let columns: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for column in ["pgid", "proc_start_ticks"] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE runs ADD COLUMN {column} INTEGER"))?;
            log::info!("Embedded log store migrated: column added. column={column}");
        }
    }
    Ok(())
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

fn stats_locked(conn: &mut Connection, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT status, start_ms, json_extract(json, '$.duration_ms') FROM runs
             WHERE job = ?1 AND start_ms >= ?2 AND status != 'running'",
        )
        .map_err(sql_err("cannot prepare run stats"))?;
    let rows: Vec<(String, i64, Option<i64>)> = stmt
        .query_map(rusqlite::params![job.as_str(), since.timestamp_millis()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql_err(format!("cannot compute stats of job {job}")))?
        .collect::<Result<_, _>>()
        .map_err(sql_err(format!("cannot compute stats of job {job}")))?;
    let mut stats = StatsBuilder::default();
    for (status, start_ms, duration) in rows {
        let Some(status) = RunStatus::parse(&status) else {
            log::warn!("Ignoring a run with an unknown status in stats. job={job} status={status}");
            continue;
        };
        let Some(start) = DateTime::from_timestamp_millis(start_ms) else { continue };
        stats.add(status, start, duration.and_then(|d| u64::try_from(d).ok()));
    }
    Ok(stats.finish())
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

#[async_trait]
impl LogStore for SqliteLogStore {
    async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(records.len());
        let processes: Vec<(String, Option<i32>, Option<i64>)> = records
            .iter()
            .filter(|r| r.pgid.is_some())
            .map(|r| (r.id.0.clone(), r.pgid, r.proc_start_ticks.and_then(|t| i64::try_from(t).ok())))
            .collect();
        for r in records {
            let json = serde_json::to_string(r).map_err(|e| BackendError::Corrupt {
                backend: BACKEND,
                message: format!("run {} cannot be serialized: {e}", r.id),
            })?;
            let row = (r.id.0.clone(), r.job.as_str().to_owned(), r.status.as_str(), r.worker.0.clone());
            rows.push((row, r.start_time().timestamp_millis(), json));
        }
        with_locked(&self.conn, BACKEND, move |conn| {
            let n = rows.len();
            let tx = conn.transaction().map_err(sql_err(format!("cannot begin a batch of {n} runs")))?;
            {
                // A final record is never replaced by a `running` one (a late retry of the
                // start record must not resurrect a finished run).
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO runs (id, job, status, worker, start_ms, json, job_version)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, json_extract(?6, '$.job_version'))
                         ON CONFLICT(id) DO UPDATE SET job = excluded.job, status = excluded.status,
                             worker = excluded.worker, start_ms = excluded.start_ms, json = excluded.json,
                             job_version = excluded.job_version
                         WHERE runs.status = 'running' OR excluded.status != 'running'",
                    )
                    .map_err(sql_err("cannot prepare the run upsert"))?;
                for ((id, job, status, worker), start_ms, json) in &rows {
                    stmt.execute(rusqlite::params![id, job, status, worker, start_ms, json])
                        .map_err(sql_err(format!("cannot write run {id}")))?;
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
        with_locked(&self.conn, BACKEND, move |conn| {
            let json: Option<String> = conn
                .query_row("SELECT json FROM runs WHERE id = ?1", [&id.0], |r| r.get(0))
                .optional()
                .map_err(sql_err(format!("cannot read run {id}")))?;
            json.map(|json| parse_record(&id.0, &json)).transpose()
        })
        .await
    }

    async fn query(&self, query: &RunQuery) -> Result<RunPage, BackendError> {
        let query = query.clone();
        with_locked(&self.conn, BACKEND, move |conn| query_locked(conn, &query)).await
    }

    async fn count(&self, filter: &RunFilter) -> Result<u64, BackendError> {
        let filter = filter.clone();
        with_locked(&self.conn, BACKEND, move |conn| {
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
        with_locked(&self.conn, BACKEND, move |conn| stats_locked(conn, &job, since)).await
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
        with_locked(&self.conn, BACKEND, |conn| {
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
