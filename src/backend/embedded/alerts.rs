//! Embedded alert records: the single-node side of alert claims, in SQLite (`alerts.sqlite3`
//! under `data_dir`, or in memory for tests), so a restarted node neither re-sends an alert it
//! delivered nor forgets the history.
//!
//! Owns: the `alerts` table, keyed by (job segment, alert id), with a per-record revision for
//! compare-and-set. Leaves to others: what a record means (`domain::alert`), who claims
//! (`actors/alerts.rs`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{open_sqlite, sql_err, with_locked, Durability};
use crate::backend::claims::StoredAlert;
use crate::backend::BackendError;
use crate::domain::AlertRecord;

const BACKEND: &str = "embedded alert store";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS alerts (
    job TEXT NOT NULL,
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    raised_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job, id)
);
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_ms);";

/// The alert table.
#[derive(Debug, Clone)]
pub(crate) struct AlertTable {
    conn: Arc<Mutex<Connection>>,
}

impl AlertTable {
    /// Opens (or creates) the table in the file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, BackendError> {
        Self::init(open_sqlite(path, Durability::Full)?)
    }

    /// A table in memory (tests; embedded claims built without a data directory).
    pub(crate) fn in_memory() -> Result<Self, BackendError> {
        Self::init(Connection::open_in_memory().map_err(sql_err("cannot open an in-memory alert table"))?)
    }

    fn init(conn: Connection) -> Result<Self, BackendError> {
        conn.execute_batch(SCHEMA).map_err(sql_err("cannot create the alerts table"))?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    pub(crate) async fn claim(&self, record: &AlertRecord) -> Result<Option<i64>, BackendError> {
        let row = Row::of(record)?;
        with_locked(&self.conn, BACKEND, move |conn| {
            let n = conn
                .execute(
                    "INSERT OR IGNORE INTO alerts (job, id, revision, raised_ms, updated_ms, record) VALUES (?1, ?2, 1, ?3, ?4, ?5)",
                    params![row.job, row.id, row.raised_ms, row.updated_ms, row.json],
                )
                .map_err(sql_err("cannot claim an alert"))?;
            Ok((n == 1).then_some(1))
        })
        .await
    }

    pub(crate) async fn update(&self, record: &AlertRecord, revision: i64) -> Result<Option<i64>, BackendError> {
        let row = Row::of(record)?;
        with_locked(&self.conn, BACKEND, move |conn| {
            let n = conn
                .execute(
                    "UPDATE alerts SET revision = revision + 1, updated_ms = ?3, record = ?4 WHERE job = ?1 AND id = ?2 AND revision = ?5",
                    params![row.job, row.id, row.updated_ms, row.json, revision],
                )
                .map_err(sql_err("cannot update an alert"))?;
            Ok((n == 1).then_some(revision + 1))
        })
        .await
    }

    pub(crate) async fn get(&self, job: &str, id: &str) -> Result<Option<StoredAlert>, BackendError> {
        let (job, id) = (job.to_owned(), id.to_owned());
        let found = with_locked(&self.conn, BACKEND, move |conn| {
            conn.query_row("SELECT record, revision FROM alerts WHERE job = ?1 AND id = ?2", params![job, id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()
            .map_err(sql_err("cannot read an alert"))
        })
        .await?;
        found.map(|(json, revision)| decode(&json, revision)).transpose()
    }

    pub(crate) async fn list(&self, job: Option<&str>) -> Result<Vec<StoredAlert>, BackendError> {
        let job = job.map(str::to_owned);
        let rows = with_locked(&self.conn, BACKEND, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT record, revision FROM alerts WHERE (?1 IS NULL OR job = ?1) ORDER BY raised_ms DESC, id DESC",
                )
                .map_err(sql_err("cannot list alerts"))?;
            let rows = stmt
                .query_map(params![job], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sql_err("cannot list alerts"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql_err("cannot list alerts"))?;
            Ok(rows)
        })
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (json, revision) in rows {
            match decode(&json, revision) {
                Ok(a) => out.push(a),
                Err(e) => log::warn!("Skipping an unreadable alert record. error={e}"),
            }
        }
        Ok(out)
    }

    pub(crate) async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        let ms = before.timestamp_millis();
        with_locked(&self.conn, BACKEND, move |conn| {
            let n = conn
                .execute("DELETE FROM alerts WHERE updated_ms < ?1", params![ms])
                .map_err(sql_err("cannot purge alerts"))?;
            Ok(n as u64)
        })
        .await
    }
}

struct Row {
    job: String,
    id: String,
    raised_ms: i64,
    updated_ms: i64,
    json: String,
}

impl Row {
    fn of(record: &AlertRecord) -> Result<Self, BackendError> {
        let json = serde_json::to_string(record)
            .map_err(|e| BackendError::Corrupt { backend: BACKEND, message: format!("alert record: {e}") })?;
        Ok(Self {
            job: record.job_segment().to_owned(),
            id: record.alert.id.clone(),
            raised_ms: record.alert.raised_at.timestamp_millis(),
            updated_ms: record.updated_at.timestamp_millis(),
            json,
        })
    }
}

fn decode(json: &str, revision: i64) -> Result<StoredAlert, BackendError> {
    let record = serde_json::from_str(json)
        .map_err(|e| BackendError::Corrupt { backend: BACKEND, message: format!("alert record: {e}") })?;
    Ok(StoredAlert { record, revision })
}
