//! Embedded single-node adapters: everything under `data_dir`, nothing external.
//!
//! The job store and the log store are SQLite files (`jobs.sqlite3`, `runs.sqlite3`), durable
//! across restarts; membership and claims live in process memory, which is all a single node
//! needs. Each adapter keeps its state behind one `std::sync::Mutex`, taken only inside
//! `with_locked` on tokio's blocking pool, so no actor thread ever waits on SQLite and no lock
//! is held across an `.await`. What every adapter must guarantee is in [`super::guide`]; the
//! tests here run [`super::conformance`] against each adapter.

mod alerts;
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

/// How hard a commit waits for the disk (SQLite's `synchronous`, in WAL mode). README
/// "Durability" states what each store uses and what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced at every commit, so a committed transaction
    /// survives a power loss. The job store: a 201 means the job is on disk.
    Full,
    /// `synchronous=NORMAL`: fsync at checkpoints only; a crash of the process loses nothing,
    /// a power loss may lose the last commits, never consistency. The run log: records are
    /// re-derivable (spool, lost-run recovery) and written at a rate where FULL costs the most.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// Opens (or creates) a SQLite database in WAL mode with the given [`Durability`].
fn open_sqlite(path: &Path, durability: Durability) -> Result<Connection, BackendError> {
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
    let level = durability.pragma();
    conn.pragma_update(None, "synchronous", level)
        .map_err(sql_err(format!("cannot set synchronous={level} on {shown}")))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::{open_sqlite, Durability};
    use crate::backend::{conformance, Backends, Precondition};
    use crate::domain::JobName;

    #[test]
    fn the_job_store_commits_with_full_sync_and_the_run_log_with_normal() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (durability, level) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let conn = open_sqlite(&dir.path().join(format!("{level}.sqlite3")), durability).expect("open");
            let got: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma");
            assert_eq!(got, level, "{durability:?}");
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("pragma");
            assert_eq!(mode, "wal");
        }
    }

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
