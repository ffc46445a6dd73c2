//! Embedded job store: jobs in a SQLite file, watch from a revision through an in-memory ring of
//! recent events plus a broadcast channel for live ones.
//!
//! Every put, delete and signal takes the next revision inside one SQLite transaction (table
//! `meta`), then, still under the store's lock, is appended to the ring and broadcast. A watch
//! subscribes and copies the ring under that same lock, so it sees every change after `from`
//! exactly once and in order. The ring is in memory: after a restart, history starts at the
//! revision the store was opened at, and older `from`s get `Compacted` (the watcher resyncs).
//!
//! Audit entries are rows of table `audit` in the same file, inserted in the transaction of the
//! change they record.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::{open_sqlite, sql_err, with_locked};
use crate::backend::jobs::{Change, JobSnapshot, JobStore, Precondition, PutOutcome, Signal, WatchEvent, WatchStream};
use crate::backend::BackendError;
use crate::domain::audit::{id_bound, AuditEntry};
use crate::domain::{AuditContext, AuditPage, AuditQuery, Job, JobName, Revision};

const BACKEND: &str = "embedded job store";

/// How much watch history the embedded job store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStoreLimits {
    /// Recent events kept for `watch(from)` replay; an older `from` gets `Compacted`.
    pub history: usize,
    /// Live events a slow watcher may fall behind before its stream ends with `Compacted`.
    pub live_buffer: usize,
}

impl Default for JobStoreLimits {
    fn default() -> Self {
        Self { history: 10_000, live_buffer: 1024 }
    }
}

/// The job store of a single node, in a SQLite file.
#[derive(Debug, Clone)]
pub struct EmbeddedJobStore {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

struct State {
    conn: Connection,
    /// Recent events, oldest first; their revisions are consecutive.
    ring: VecDeque<WatchEvent>,
    history: usize,
    /// Oldest revision a watch may start from (every later one is in the ring or to come).
    first_kept: i64,
    live: broadcast::Sender<WatchEvent>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("ring", &self.ring.len()).field("first_kept", &self.first_kept).finish()
    }
}

impl State {
    /// Records a committed change for watchers: ring first, then live subscribers.
    fn publish(&mut self, event: WatchEvent) {
        self.ring.push_back(event.clone());
        while self.ring.len() > self.history {
            if let Some(old) = self.ring.pop_front() {
                self.first_kept = old.revision.0 + 1;
            }
        }
        // No receiver is not an error: nobody watches yet.
        let _ = self.live.send(event);
    }
}

impl EmbeddedJobStore {
    /// Opens (or creates) the store at `path` with the default [`JobStoreLimits`].
    ///
    /// # Errors
    /// `Io`/`Sqlite` when the file cannot be created, opened or migrated.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        Self::open_with(path, JobStoreLimits::default())
    }

    /// Opens (or creates) the store at `path`, keeping `limits.history` events for replay.
    ///
    /// # Errors
    /// `Io`/`Sqlite` when the file cannot be created, opened or migrated.
    pub fn open_with(path: &Path, limits: JobStoreLimits) -> Result<Self, BackendError> {
        // README "Durability": a 201 from the API means the job is on disk.
        let conn = open_sqlite(path, super::Durability::Full)?;
        let shown = path.display();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                 name TEXT PRIMARY KEY,
                 json TEXT NOT NULL,
                 mod_revision INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 revision INTEGER NOT NULL
             );
             INSERT OR IGNORE INTO meta (id, revision) VALUES (1, 0);
             CREATE TABLE IF NOT EXISTS audit (
                 id TEXT PRIMARY KEY,
                 job TEXT NOT NULL,
                 actor TEXT NOT NULL,
                 json TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS audit_job ON audit (job, id);",
        )
        .map_err(sql_err(format!("cannot create the job tables in {shown}")))?;
        let revision = read_revision(&conn).map_err(sql_err(format!("cannot read the revision in {shown}")))?;
        let (live, _) = broadcast::channel(limits.live_buffer.max(1));
        let state =
            State { conn, ring: VecDeque::new(), history: limits.history.max(1), first_kept: revision + 1, live };
        log::info!("Embedded job store opened. path={shown} revision={revision}");
        Ok(Self { state: Arc::new(Mutex::new(state)), path: path.to_owned() })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_revision(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT revision FROM meta WHERE id = 1", [], |r| r.get(0))
}

/// Parses and validates a stored job (exactly as API input), or says why it is not one.
fn parse_job(name: &str, json: &str) -> Result<Job, BackendError> {
    let corrupt = |message: String| BackendError::Corrupt { backend: BACKEND, message };
    let name = JobName::parse(name).map_err(|e| corrupt(format!("job key {name} is not a valid name: {e}")))?;
    Job::from_stored(&name, json.as_bytes())
        .map_err(|e| BackendError::InvalidStoredJob { name: e.name, reason: e.reason })
}

/// Inserts `entry` within the caller's transaction.
fn insert_audit(tx: &rusqlite::Transaction<'_>, entry: &AuditEntry) -> Result<(), BackendError> {
    let json = serde_json::to_string(entry).map_err(|e| BackendError::Corrupt {
        backend: BACKEND,
        message: format!("audit entry of job {} cannot be serialized: {e}", entry.job),
    })?;
    tx.execute(
        "INSERT INTO audit (id, job, actor, json) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![entry.id, entry.job.as_str(), entry.actor, json],
    )
    .map_err(sql_err(format!("cannot record the audit entry of job {}", entry.job)))?;
    Ok(())
}

fn put_locked(
    state: &mut State,
    mut job: Job,
    precondition: Precondition,
    audit: Option<&AuditContext>,
) -> Result<PutOutcome, BackendError> {
    let name = job.name.clone();
    let tx = state
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err("cannot begin a job write"))?;
    let stored: Option<String> = tx
        .query_row("SELECT json FROM jobs WHERE name = ?1", [name.as_str()], |r| r.get(0))
        .optional()
        .map_err(sql_err(format!("cannot read job {name}")))?;
    let previous = match stored.as_deref().map(|json| parse_job(name.as_str(), json)) {
        None => None,
        Some(Ok(prev)) => Some(prev),
        // An unreadable job may be overwritten, but not compared with.
        Some(Err(e)) => match precondition {
            Precondition::Any => {
                log::warn!("Overwriting a stored job that does not parse. key={name} error={e}");
                None
            }
            Precondition::Absent => return Err(BackendError::JobExists { name }),
            Precondition::Version(_) => return Err(e),
        },
    };
    match (precondition, &previous) {
        (Precondition::Absent, Some(_)) => return Err(BackendError::JobExists { name }),
        (Precondition::Version(_), None) => return Err(BackendError::JobNotFound { name }),
        (Precondition::Version(expected), Some(prev)) if prev.version != expected => {
            return Err(BackendError::VersionConflict { name, expected, found: prev.version })
        }
        _ => {}
    }
    let now = Utc::now();
    job.version = previous.as_ref().map_or(1, |p| p.version + 1);
    job.created_at = previous.as_ref().map_or(now, |p| p.created_at);
    job.updated_at = now;
    let json = serde_json::to_string(&job).map_err(|e| BackendError::Corrupt {
        backend: BACKEND,
        message: format!("job {name} cannot be serialized: {e}"),
    })?;
    let revision = read_revision(&tx).map_err(sql_err("cannot read the revision"))? + 1;
    tx.execute(
        "INSERT INTO jobs (name, json, mod_revision) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET json = excluded.json, mod_revision = excluded.mod_revision",
        rusqlite::params![name.as_str(), json, revision],
    )
    .map_err(sql_err(format!("cannot write job {name}")))?;
    if let Some(ctx) = audit {
        insert_audit(&tx, &ctx.entry(&name, previous.as_ref(), Some(&job), now))?;
    }
    tx.execute("UPDATE meta SET revision = ?1 WHERE id = 1", [revision])
        .map_err(sql_err("cannot advance the revision"))?;
    tx.commit().map_err(sql_err(format!("cannot commit job {name}")))?;
    let revision = Revision(revision);
    state.publish(WatchEvent { revision, change: Change::Put(job.clone()) });
    Ok(PutOutcome { previous, job, revision })
}

fn delete_locked(
    state: &mut State,
    name: &JobName,
    expected: Option<u64>,
    audit: Option<&AuditContext>,
) -> Result<Option<Job>, BackendError> {
    let tx = state
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err("cannot begin a job delete"))?;
    let stored: Option<String> = tx
        .query_row("SELECT json FROM jobs WHERE name = ?1", [name.as_str()], |r| r.get(0))
        .optional()
        .map_err(sql_err(format!("cannot read job {name}")))?;
    let previous = match (stored, expected) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Err(BackendError::JobNotFound { name: name.clone() }),
        (Some(json), None) => match parse_job(name.as_str(), &json) {
            Ok(prev) => Some(prev),
            Err(e) => {
                log::warn!("Deleting a stored job that does not parse. key={name} error={e}");
                None
            }
        },
        (Some(json), Some(expected)) => {
            let prev = parse_job(name.as_str(), &json)?;
            if prev.version != expected {
                return Err(BackendError::VersionConflict { name: name.clone(), expected, found: prev.version });
            }
            Some(prev)
        }
    };
    let revision = read_revision(&tx).map_err(sql_err("cannot read the revision"))? + 1;
    tx.execute("DELETE FROM jobs WHERE name = ?1", [name.as_str()])
        .map_err(sql_err(format!("cannot delete job {name}")))?;
    if let Some(ctx) = audit {
        insert_audit(&tx, &ctx.entry(name, previous.as_ref(), None, Utc::now()))?;
    }
    tx.execute("UPDATE meta SET revision = ?1 WHERE id = 1", [revision])
        .map_err(sql_err("cannot advance the revision"))?;
    tx.commit().map_err(sql_err(format!("cannot commit the delete of job {name}")))?;
    state.publish(WatchEvent { revision: Revision(revision), change: Change::Delete(name.clone()) });
    Ok(previous)
}

fn signal_locked(state: &mut State, signal: Signal, audit: Option<&AuditEntry>) -> Result<Revision, BackendError> {
    let tx = state
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err("cannot begin a signal"))?;
    if let Some(entry) = audit {
        insert_audit(&tx, entry)?;
    }
    let revision = read_revision(&tx).map_err(sql_err("cannot read the revision"))? + 1;
    tx.execute("UPDATE meta SET revision = ?1 WHERE id = 1", [revision])
        .map_err(sql_err("cannot advance the revision"))?;
    tx.commit().map_err(sql_err("cannot commit a signal"))?;
    let revision = Revision(revision);
    state.publish(WatchEvent { revision, change: Change::Signal(signal) });
    Ok(revision)
}

/// Live events after the replayed ones: skips what the replay covered or what precedes
/// `from`; ends with `Compacted` when the receiver lagged, and quietly when the store is gone.
fn live_stream(rx: broadcast::Receiver<WatchEvent>, next: i64) -> WatchStream {
    futures::stream::unfold(Some((rx, next)), |state| async move {
        let (mut rx, next) = state?;
        loop {
            match rx.recv().await {
                Ok(event) if event.revision.0 < next => continue,
                Ok(event) => {
                    let after = event.revision.0 + 1;
                    return Some((Ok(event), Some((rx, after))));
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    let skipped = i64::try_from(skipped).unwrap_or(i64::MAX / 2);
                    log::warn!(
                        "A job watcher fell behind the live buffer; it must resync. next={next} skipped={skipped}"
                    );
                    let error = BackendError::Compacted {
                        requested: Revision(next),
                        compacted: Revision(next.saturating_add(skipped) - 1),
                    };
                    return Some((Err(error), None));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

#[async_trait]
impl JobStore for EmbeddedJobStore {
    async fn snapshot(&self) -> Result<(Vec<Job>, Revision), BackendError> {
        let snapshot = self.snapshot_checked().await?;
        Ok((snapshot.jobs, snapshot.revision))
    }

    async fn snapshot_checked(&self) -> Result<JobSnapshot, BackendError> {
        with_locked(&self.state, BACKEND, |state| {
            let tx = state.conn.transaction().map_err(sql_err("cannot begin a snapshot"))?;
            let revision = read_revision(&tx).map_err(sql_err("cannot read the revision"))?;
            let rows: Vec<(String, String)> = {
                let mut stmt = tx
                    .prepare("SELECT name, json FROM jobs ORDER BY name")
                    .map_err(sql_err("cannot prepare the job snapshot"))?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql_err("cannot read the jobs"))?
                    .collect::<Result<_, _>>()
                    .map_err(sql_err("cannot read the jobs"))?;
                rows
            };
            tx.finish().map_err(sql_err("cannot end a snapshot"))?;
            let mut snapshot = JobSnapshot { jobs: Vec::new(), invalid: Vec::new(), revision: Revision(revision) };
            for (name, json) in rows {
                let Ok(name) = JobName::parse(&name) else {
                    log::debug!("Ignoring a stored row that does not name a valid job. name={name:?}");
                    continue;
                };
                // The scheduler logs an invalid one once.
                snapshot.add_stored(&name, json.as_bytes());
            }
            Ok(snapshot)
        })
        .await
    }

    async fn get(&self, name: &JobName) -> Result<Option<Job>, BackendError> {
        let name = name.clone();
        with_locked(&self.state, BACKEND, move |state| {
            let json: Option<String> = state
                .conn
                .query_row("SELECT json FROM jobs WHERE name = ?1", [name.as_str()], |r| r.get(0))
                .optional()
                .map_err(sql_err(format!("cannot read job {name}")))?;
            json.map(|json| parse_job(name.as_str(), &json)).transpose()
        })
        .await
    }

    async fn put(&self, job: Job, precondition: Precondition) -> Result<PutOutcome, BackendError> {
        with_locked(&self.state, BACKEND, move |state| put_locked(state, job, precondition, None)).await
    }

    async fn delete(&self, name: &JobName, expected_version: Option<u64>) -> Result<Option<Job>, BackendError> {
        let name = name.clone();
        with_locked(&self.state, BACKEND, move |state| delete_locked(state, &name, expected_version, None)).await
    }

    async fn signal(&self, signal: Signal) -> Result<Revision, BackendError> {
        with_locked(&self.state, BACKEND, move |state| signal_locked(state, signal, None)).await
    }

    async fn put_audited(
        &self,
        job: Job,
        precondition: Precondition,
        audit: AuditContext,
    ) -> Result<PutOutcome, BackendError> {
        with_locked(&self.state, BACKEND, move |state| put_locked(state, job, precondition, Some(&audit))).await
    }

    async fn delete_audited(
        &self,
        name: &JobName,
        expected_version: Option<u64>,
        audit: AuditContext,
    ) -> Result<Option<Job>, BackendError> {
        let name = name.clone();
        with_locked(&self.state, BACKEND, move |state| delete_locked(state, &name, expected_version, Some(&audit)))
            .await
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
        with_locked(&self.state, BACKEND, move |state| signal_locked(state, signal, Some(&entry))).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, BackendError> {
        let query = query.clone();
        with_locked(&self.state, BACKEND, move |state| {
            let limit = query.limit.max(1);
            let mut stmt = state
                .conn
                .prepare(
                    "SELECT id, json FROM audit
                     WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR id < ?3)
                     ORDER BY id DESC LIMIT ?4",
                )
                .map_err(sql_err("cannot prepare the audit query"))?;
            let rows: Vec<(String, String)> = stmt
                .query_map(
                    rusqlite::params![
                        query.job.as_ref().map(JobName::as_str),
                        query.actor.as_deref(),
                        query.before.as_deref(),
                        i64::from(limit) + 1
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql_err("cannot read the audit log"))?
                .collect::<Result<_, _>>()
                .map_err(sql_err("cannot read the audit log"))?;
            let entries = rows
                .into_iter()
                .filter_map(|(id, json)| match serde_json::from_str::<AuditEntry>(&json) {
                    Ok(entry) => Some(entry),
                    Err(e) => {
                        log::warn!("Skipping an audit entry that does not parse. id={id} error={e}");
                        None
                    }
                })
                .collect();
            Ok(AuditPage::from_overfetch(entries, limit))
        })
        .await
    }

    async fn purge_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, BackendError> {
        let bound = id_bound(cutoff);
        with_locked(&self.state, BACKEND, move |state| {
            let n = state
                .conn
                .execute("DELETE FROM audit WHERE id < ?1", [bound])
                .map_err(sql_err("cannot purge the audit log"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, BackendError> {
        with_locked(&self.state, BACKEND, move |state| {
            // Revisions start at 1: `from` <= 1 asks for everything, which a fresh store has.
            let lowest = from.0.max(1);
            if lowest < state.first_kept {
                return Err(BackendError::Compacted { requested: from, compacted: Revision(state.first_kept - 1) });
            }
            // Subscribe and copy the ring under one lock: no gap, no duplicate.
            let rx = state.live.subscribe();
            let replay: Vec<WatchEvent> = state.ring.iter().filter(|e| e.revision.0 >= lowest).cloned().collect();
            let next = replay.last().map_or(lowest, |e| e.revision.0 + 1);
            let replay = futures::stream::iter(replay.into_iter().map(Ok));
            Ok(replay.chain(live_stream(rx, next)).boxed())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::backend::conformance;

    fn store(dir: &tempfile::TempDir) -> Arc<dyn JobStore> {
        Arc::new(EmbeddedJobStore::open(&dir.path().join("jobs.sqlite3")).expect("open"))
    }

    fn job(name: &str) -> Job {
        conformance::sample_job(&JobName::parse(name).expect("name"))
    }

    #[tokio::test]
    async fn passes_put_get_delete_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::job_store_put_get_delete(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_precondition_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::job_store_preconditions(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_concurrent_writers_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::job_store_concurrent_writers(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_audit_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::job_store_audit(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_watch_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::job_store_watch(store(&dir)).await;
    }

    #[tokio::test]
    async fn passes_whole_suite_on_one_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::job_store_suite(store(&dir)).await;
    }

    #[tokio::test]
    async fn jobs_and_revision_survive_a_restart_but_history_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.sqlite3");
        let (before, rev_before) = {
            let store = EmbeddedJobStore::open(&path).expect("open");
            store.put(job("a"), Precondition::Absent).await.expect("put a");
            store.put(job("b"), Precondition::Absent).await.expect("put b");
            store.put(job("a"), Precondition::Version(1)).await.expect("update a");
            store
                .signal(Signal::RunNow {
                    job: job("a").name,
                    request: "r1".into(),
                    env: Default::default(),
                    retry: None,
                })
                .await
                .expect("signal");
            store.snapshot().await.expect("snapshot")
        };
        assert_eq!(rev_before, Revision(4));
        let store = EmbeddedJobStore::open(&path).expect("reopen");
        let (after, rev_after) = store.snapshot().await.expect("snapshot");
        assert_eq!(after, before);
        assert_eq!(after.iter().map(|j| j.version).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(rev_after, rev_before);
        let out = store.put(job("c"), Precondition::Absent).await.expect("put c");
        assert_eq!(out.revision, Revision(5), "revision continues after a restart");
        match store.watch(Revision(2)).await {
            Err(BackendError::Compacted { requested, compacted }) => {
                assert_eq!(requested, Revision(2));
                assert_eq!(compacted, Revision(4));
            }
            Err(e) => panic!("expected Compacted, got {e}"),
            Ok(_) => panic!("expected Compacted, got a stream"),
        }
        let mut stream = store.watch(Revision(5)).await.expect("watch from the first post-restart revision");
        let ev = stream.next().await.expect("event").expect("ok");
        assert_eq!(ev.revision, Revision(5));
    }

    #[tokio::test]
    async fn watch_older_than_the_ring_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = JobStoreLimits { history: 3, live_buffer: 16 };
        let store = EmbeddedJobStore::open_with(&dir.path().join("j.sqlite3"), limits).expect("open");
        for i in 0..5 {
            store.put(job(&format!("j{i}")), Precondition::Any).await.expect("put");
        }
        // Revisions 1..=5; the ring holds 3..=5.
        assert!(matches!(
            store.watch(Revision(2)).await.err(),
            Some(BackendError::Compacted { requested: Revision(2), compacted: Revision(2) })
        ));
        let mut stream = store.watch(Revision(3)).await.expect("watch within history");
        for rev in 3..=5 {
            assert_eq!(stream.next().await.expect("event").expect("ok").revision, Revision(rev));
        }
    }

    #[tokio::test]
    async fn a_lagging_watcher_gets_compacted_then_the_stream_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = JobStoreLimits { history: 100, live_buffer: 4 };
        let store = EmbeddedJobStore::open_with(&dir.path().join("j.sqlite3"), limits).expect("open");
        let mut stream = store.watch(Revision(1)).await.expect("watch");
        for i in 0..10 {
            store.put(job(&format!("j{i}")), Precondition::Any).await.expect("put");
        }
        match stream.next().await {
            Some(Err(BackendError::Compacted { requested, .. })) => assert_eq!(requested, Revision(1)),
            other => panic!("expected a Compacted item, got {other:?}"),
        }
        assert!(stream.next().await.is_none(), "the stream ends after an error");
    }

    #[tokio::test]
    async fn watch_from_a_future_revision_waits_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedJobStore::open(&dir.path().join("j.sqlite3")).expect("open");
        store.put(job("a"), Precondition::Any).await.expect("put");
        let mut stream = store.watch(Revision(4)).await.expect("watch ahead");
        store.put(job("b"), Precondition::Any).await.expect("put");
        store.signal(Signal::Kill { job: job("a").name, run: None }).await.expect("signal");
        store.delete(&job("a").name, None).await.expect("delete");
        let ev = stream.next().await.expect("event").expect("ok");
        assert_eq!(ev.revision, Revision(4));
        assert_eq!(ev.change, Change::Delete(job("a").name));
    }

    #[tokio::test]
    async fn a_stored_job_that_does_not_parse_is_skipped_by_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.sqlite3");
        let store = EmbeddedJobStore::open(&path).expect("open");
        store.put(job("good"), Precondition::Any).await.expect("put");
        {
            let conn = Connection::open(&path).expect("raw open");
            conn.execute("INSERT INTO jobs (name, json, mod_revision) VALUES ('bad', '{not json', 1)", [])
                .expect("raw insert");
            conn.execute(
                "INSERT INTO jobs (name, json, mod_revision) VALUES ('seed', '{\"name\":\"seed\",\"command\":\"echo hi\",\"cron_expr\":\"*/5 * * * * *\"}', 1)",
                [],
            )
            .expect("raw insert");
        }
        let (jobs, _) = store.snapshot().await.expect("snapshot");
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, vec!["good", "seed"]);
        let checked = store.snapshot_checked().await.expect("snapshot_checked");
        assert_eq!(checked.invalid.len(), 1);
        assert_eq!(checked.invalid[0].name.as_str(), "bad");
        assert!(checked.invalid[0].reason.contains("does not parse"), "{:?}", checked.invalid[0]);
        let seed = store.get(&job("seed").name).await.expect("get").expect("present");
        assert_eq!(seed.version, 0, "a seed-written job has version 0");
        assert_eq!(seed.dialect, crate::domain::Dialect::Seed);
        let updated = store.put(seed, Precondition::Version(0)).await.expect("update seed job");
        assert_eq!(updated.job.version, 1);
        assert!(matches!(store.get(&job("bad").name).await, Err(BackendError::InvalidStoredJob { .. })));
        assert!(matches!(store.put(job("bad"), Precondition::Absent).await, Err(BackendError::JobExists { .. })));
        let out = store.put(job("bad"), Precondition::Any).await.expect("overwrite unreadable job");
        assert_eq!(out.previous, None);
        assert_eq!(out.job.version, 1);
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_store_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedJobStore::open(&dir.path().join("j.sqlite3")).expect("open");
        let mut stream = store.watch(Revision(1)).await.expect("watch");
        drop(store);
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("ends promptly");
        assert!(end.is_none());
    }
}
