//! Embedded single-node adapters: everything under `data_dir`, nothing external.
//!
//! The job store and the log store are SQLite files (`jobs.sqlite3`, `runs.sqlite3`), durable
//! across restarts; membership and claims live in process memory, which is all a single node
//! needs. Each adapter keeps its state behind one `std::sync::Mutex`, taken only inside
//! `with_locked` on tokio's blocking pool, so no actor thread ever waits on SQLite and no lock
//! is held across an `.await`. What every adapter must guarantee is in [`super::guide`]; the
//! tests here run [`super::conformance`] against each adapter.

mod claims;
mod jobs;
mod logs;
mod members;

pub use claims::EmbeddedClaims;
pub use jobs::{EmbeddedJobStore, JobStoreLimits};
pub use logs::SqliteLogStore;
pub use members::EmbeddedMembership;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use super::BackendError;

/// Runs `f` with `state` locked, on tokio's blocking pool.
///
/// A panic inside `f` poisons the mutex; the state is still used afterwards because every
/// SQLite change runs in a transaction that rolls back on unwind.
async fn with_locked<S, T, F>(state: &Arc<Mutex<S>>, backend: &'static str, f: F) -> Result<T, BackendError>
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut S) -> Result<T, BackendError> + Send + 'static,
{
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let mut guard = state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    })
    .await
    .map_err(|e| BackendError::Unavailable { backend, message: format!("storage task failed: {e}") })?
}

/// Maps a rusqlite error to [`BackendError::Sqlite`] with `context`.
fn sql_err(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> BackendError {
    let context = context.into();
    move |source| BackendError::Sqlite { context, source }
}

/// Opens (or creates) a SQLite database in WAL mode with `synchronous=NORMAL`: a crash loses
/// at most the last transactions since a checkpoint on power loss, never consistency.
fn open_sqlite(path: &Path) -> Result<Connection, BackendError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| BackendError::Io {
            context: format!("cannot create directory {}", dir.display()),
            source,
        })?;
    }
    let shown = path.display();
    let conn = Connection::open(path).map_err(sql_err(format!("cannot open {shown}")))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err(format!("cannot set busy timeout on {shown}")))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(sql_err(format!("cannot enable WAL on {shown}")))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("SQLite refused WAL mode; continuing in its default mode. path={shown} mode={mode}");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err(format!("cannot set synchronous=NORMAL on {shown}")))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use crate::backend::{conformance, Backends, Precondition};
    use crate::domain::JobName;

    #[tokio::test]
    async fn backends_embedded_opens_every_port_under_data_dir_and_keeps_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("nested/data");
        let name = JobName::parse("kept").expect("name");
        {
            let backends = Backends::embedded(&data_dir).expect("embedded backends");
            assert_eq!(backends.kinds.jobs, "embedded (SQLite)");
            backends.jobs.put(conformance::sample_job(&name), Precondition::Absent).await.expect("put");
            backends.logs.ping().await.expect("ping");
            assert!(backends.members.live().await.expect("live").is_empty());
            assert!(backends.claims.running(None).await.expect("running").is_empty());
        }
        assert!(data_dir.join("jobs.sqlite3").is_file());
        assert!(data_dir.join("runs.sqlite3").is_file());
        let backends = Backends::embedded(&data_dir).expect("reopen");
        assert!(backends.jobs.get(&name).await.expect("get").is_some(), "jobs survive a restart");
    }
}
