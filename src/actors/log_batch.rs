//! LogBatchActor: batches run records and writes them to the log store with one call per batch;
//! spools to disk while the store fails and replays the spool when it answers again.
//!
//! Guarantees (ARCHITECTURE.md "Actors"): a record handed to this actor is written or spooled,
//! never dropped; records of one run keep their order (running before final); a retried batch
//! never duplicates a run because the store upserts by run id. A failing store never blocks the
//! sender: `RecordRun` only pushes to a buffer. Limit: records younger than `flush_ms` live only
//! in memory and are lost if the process is SIGKILLed before the flush.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::messages::{FlushLogs, GetLogStatus, LogStatus, RecordRun};
use super::spool::Spool;
use crate::backend::{LogStore, RunFilter, RunQuery};
use crate::domain::{RunRecord, RunStatus, WorkerId};

/// Bound of one store call; a slower store is treated as failing.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often retention runs when enabled.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Settings of the actor (from `[log_batch]`).
#[derive(Debug, Clone)]
pub struct LogBatchSettings {
    /// Flush at this many buffered records.
    pub max_records: usize,
    /// Flush at least this often.
    pub flush: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Delete runs older than this many days (0 = never).
    pub retention_days: u32,
}

/// Batches and writes run records.
pub struct LogBatchActor {
    store: Arc<dyn LogStore>,
    spool: Spool,
    settings: LogBatchSettings,
    buffer: Vec<RunRecord>,
    flush_timer: Option<SpawnHandle>,
    retry_timer: Option<SpawnHandle>,
    /// A write or replay is in flight; flushes wait for it so records keep their order.
    busy: bool,
    backoff: Duration,
    store_ok: bool,
    last_error: Option<String>,
    written: u64,
    /// Woken when `busy` turns false (shutdown flush waits on them).
    idle_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl LogBatchActor {
    /// An actor writing to `store`, spooling to `spool`.
    pub(crate) fn new(store: Arc<dyn LogStore>, spool: Spool, settings: LogBatchSettings) -> Self {
        let backoff = settings.retry_initial;
        Self {
            store,
            spool,
            settings,
            buffer: Vec::new(),
            flush_timer: None,
            retry_timer: None,
            busy: false,
            backoff,
            store_ok: true,
            last_error: None,
            written: 0,
            idle_waiters: Vec::new(),
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.flush_timer.take() {
            ctx.cancel_future(h);
        }
        if self.busy || self.buffer.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buffer);
        if !self.spool.is_empty() {
            // The store is failing (or replay is pending): keep order by queueing behind the spool.
            self.spool_batch(&batch);
            self.schedule_retry(ctx);
            return;
        }
        self.busy = true;
        let store = self.store.clone();
        let fut = async move {
            let res = tokio::time::timeout(WRITE_TIMEOUT, store.append_batch(&batch)).await;
            (batch, res)
        };
        ctx.spawn(fut.into_actor(self).map(|(batch, res), act, ctx| {
            act.set_idle();
            match res {
                Ok(Ok(())) => act.wrote(batch.len()),
                Ok(Err(e)) => act.write_failed(&batch, e.to_string(), ctx),
                Err(_) => act.write_failed(&batch, format!("no answer within {}s", WRITE_TIMEOUT.as_secs()), ctx),
            }
            if act.buffer.len() >= act.settings.max_records {
                act.flush(ctx);
            } else if !act.buffer.is_empty() {
                act.arm_flush(ctx);
            }
        }));
    }

    fn set_idle(&mut self) {
        self.busy = false;
        for w in self.idle_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if !self.store_ok {
            log::info!("Log store is writable again.");
        }
        self.store_ok = true;
        self.last_error = None;
        self.backoff = self.settings.retry_initial;
    }

    fn write_failed(&mut self, batch: &[RunRecord], error: String, ctx: &mut Context<Self>) {
        if self.store_ok {
            log::warn!("Log store write failed, spooling to disk until it recovers. batch={} error={error}", batch.len());
        } else {
            log::debug!("Log store still failing, spooling. batch={} error={error}", batch.len());
        }
        self.store_ok = false;
        self.last_error = Some(error);
        self.spool_batch(batch);
        self.schedule_retry(ctx);
    }

    fn spool_batch(&mut self, batch: &[RunRecord]) {
        match self.spool.append(batch) {
            Ok(0) => {}
            Ok(trimmed) => log::error!(
                "Log spool is over its bound; outputs of newly spooled runs were trimmed (no run dropped). trimmed={trimmed} spool_bytes={}",
                self.spool.bytes()
            ),
            Err(e) => {
                // Last resort: keep them in memory and retry; never drop.
                log::error!("Cannot write the log spool; keeping records in memory. records={} error={e}", batch.len());
                let mut kept = batch.to_vec();
                kept.append(&mut self.buffer);
                self.buffer = kept;
            }
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if self.retry_timer.is_some() {
            return;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(self.settings.retry_max);
        self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.retry_timer = None;
            act.replay(ctx);
        }));
    }

    /// Writes the spool to the store in order, in batches; empties it when all is written.
    fn replay(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.schedule_retry(ctx);
            return;
        }
        if self.spool.is_empty() {
            self.flush(ctx);
            return;
        }
        let contents = match self.spool.read_all() {
            Ok(c) => c,
            Err(e) => {
                log::error!("Cannot read the log spool; will retry. error={e}");
                self.schedule_retry(ctx);
                return;
            }
        };
        if contents.corrupt_lines > 0 {
            log::warn!("Log spool had unreadable lines (torn writes from a crash); skipped. lines={}", contents.corrupt_lines);
        }
        self.busy = true;
        let store = self.store.clone();
        let chunk = self.settings.max_records.max(1);
        let fut = async move {
            let total = contents.records.len();
            for part in contents.records.chunks(chunk) {
                match tokio::time::timeout(WRITE_TIMEOUT, store.append_batch(part)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err(format!("no answer within {}s", WRITE_TIMEOUT.as_secs())),
                }
            }
            Ok(total)
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.set_idle();
            match res {
                Ok(n) => {
                    if let Err(e) = act.spool.clear() {
                        log::error!("Cannot truncate the log spool after replay; records will be re-sent (idempotent). error={e}");
                    }
                    log::info!("Log spool replayed to the store. records={n}");
                    act.wrote(n);
                    act.flush(ctx);
                }
                Err(error) => {
                    log::debug!("Log spool replay failed; will retry. error={error}");
                    act.store_ok = false;
                    act.last_error = Some(error);
                    act.flush(ctx);
                    act.schedule_retry(ctx);
                }
            }
        }));
    }

    fn arm_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_timer.is_none() {
            self.flush_timer = Some(ctx.run_later(self.settings.flush, |act, ctx| {
                act.flush_timer = None;
                act.flush(ctx);
            }));
        }
    }

    fn purge(&mut self, ctx: &mut Context<Self>) {
        let days = self.settings.retention_days;
        if days == 0 {
            return;
        }
        let before = Utc::now() - chrono::Duration::days(i64::from(days));
        let store = self.store.clone();
        ctx.spawn(
            async move { store.purge_before(before).await }
                .into_actor(self)
                .map(move |res, _, _| match res {
                    Ok(0) => {}
                    Ok(n) => log::info!("Retention deleted old runs. deleted={n} older_than_days={days}"),
                    Err(e) => log::warn!("Retention purge failed; will retry. error={e}"),
                }),
        );
    }
}

impl Actor for LogBatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.spool.is_empty() {
            log::info!("Log spool holds records from an earlier run; replaying. records={}", self.spool.records());
            self.replay(ctx);
        }
        if self.settings.retention_days > 0 {
            self.purge(ctx);
            ctx.run_interval(RETENTION_EVERY, |act, ctx| act.purge(ctx));
        }
    }
}

impl Handler<RecordRun> for LogBatchActor {
    type Result = ();

    fn handle(&mut self, msg: RecordRun, ctx: &mut Self::Context) {
        self.buffer.push(msg.0);
        if self.buffer.len() >= self.settings.max_records {
            self.flush(ctx);
        } else {
            self.arm_flush(ctx);
        }
    }
}

impl Handler<FlushLogs> for LogBatchActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FlushLogs, _ctx: &mut Self::Context) -> Self::Result {
        // Wait for an in-flight write or replay, then write (or spool) what is left, in order.
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.busy {
            self.idle_waiters.push(tx);
        } else {
            let _ = tx.send(());
        }
        let wait = async move {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, rx).await;
        };
        Box::pin(wait.into_actor(self).then(|_, act, _| {
            let batch = std::mem::take(&mut act.buffer);
            let store = act.store.clone();
            let behind_spool = !act.spool.is_empty() || act.busy;
            async move {
                if batch.is_empty() {
                    return (batch, Ok(()));
                }
                if behind_spool {
                    return (batch, Err("the log store is failing".to_owned()));
                }
                match tokio::time::timeout(Duration::from_secs(5), store.append_batch(&batch)).await {
                    Ok(Ok(())) => (batch, Ok(())),
                    Ok(Err(e)) => (batch, Err(e.to_string())),
                    Err(_) => (batch, Err("no answer within 5s".to_owned())),
                }
            }
            .into_actor(act)
            .map(|(batch, res), act, _| match res {
                Ok(()) => act.written += batch.len() as u64,
                Err(e) => {
                    log::info!("Spooling remaining run records for the next start. records={} reason={e}", batch.len());
                    act.spool_batch(&batch);
                }
            })
        }))
    }
}

impl Handler<GetLogStatus> for LogBatchActor {
    type Result = MessageResult<GetLogStatus>;

    fn handle(&mut self, _: GetLogStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(LogStatus {
            buffered: self.buffer.len(),
            spool_bytes: self.spool.bytes(),
            spool_records: self.spool.records(),
            store_ok: self.store_ok,
            last_error: self.last_error.clone(),
            written: self.written,
        })
    }
}

/// Records of runs this worker left `running` before `before` (a crash or kill of the node),
/// turned into `lost` records: from the spool (running records without a later final record)
/// and from the store.
///
/// # Errors
/// The store query's error text (the spool part is still returned through `from_spool`).
pub(crate) async fn interrupted_runs(
    store: &dyn LogStore,
    spool: &Spool,
    worker: &WorkerId,
    before: DateTime<Utc>,
) -> Result<Vec<RunRecord>, String> {
    let mut open: Vec<RunRecord> = Vec::new();
    if let Ok(contents) = spool.read_all() {
        for r in contents.records {
            open.retain(|o| o.id != r.id);
            if r.status == RunStatus::Running && &r.worker == worker {
                open.push(r);
            }
        }
    }
    let mut after = None;
    loop {
        let query = RunQuery {
            filter: RunFilter { status: Some(RunStatus::Running), worker: Some(worker.clone()), to: Some(before), ..RunFilter::default() },
            after: after.take(),
            skip: 0,
            limit: 1000,
        };
        let page = store.query(&query).await.map_err(|e| e.to_string())?;
        for r in page.runs {
            if !open.iter().any(|o| o.id == r.id) {
                open.push(r);
            }
        }
        match page.next_cursor.as_deref().and_then(crate::backend::RunCursor::decode) {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let now = Utc::now();
    Ok(open
        .into_iter()
        .map(|mut r| {
            r.status = RunStatus::Lost;
            r.err = "lost: the node stopped (crash or kill) while the run was in progress; its outcome is unknown".into();
            r.ended_at = Some(now);
            r.duration_ms = r.started_at.map(|s| (now - s).num_milliseconds().max(0) as u64);
            r
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::backend::embedded::SqliteLogStore;
    use crate::backend::{BackendError, JobStats, RunPage};
    use crate::domain::{Fence, JobName, RunId, Trigger};

    /// A real SQLite log store that can be switched off.
    struct Flaky {
        inner: SqliteLogStore,
        down: AtomicBool,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl LogStore for Flaky {
        async fn append_batch(&self, records: &[RunRecord]) -> Result<(), BackendError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(BackendError::Unavailable { backend: "test", message: "switched off".into() });
            }
            self.inner.append_batch(records).await
        }
        async fn get(&self, id: &RunId) -> Result<Option<RunRecord>, BackendError> {
            self.inner.get(id).await
        }
        async fn query(&self, q: &RunQuery) -> Result<RunPage, BackendError> {
            self.inner.query(q).await
        }
        async fn count(&self, f: &RunFilter) -> Result<u64, BackendError> {
            self.inner.count(f).await
        }
        async fn stats(&self, job: &JobName, since: DateTime<Utc>) -> Result<JobStats, BackendError> {
            self.inner.stats(job, since).await
        }
        async fn purge_before(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
            self.inner.purge_before(before).await
        }
        async fn ping(&self) -> Result<(), BackendError> {
            self.inner.ping().await
        }
    }

    fn record(i: usize, status: RunStatus) -> RunRecord {
        let mut r = RunRecord::not_run(
            JobName::parse("j").expect("name"),
            "true".into(),
            status,
            Trigger::Schedule,
            Utc::now(),
            WorkerId("w1".into()),
            Fence(i as i64),
            String::new(),
        );
        r.id = RunId(format!("run-{i:04}"));
        r
    }

    fn settings() -> LogBatchSettings {
        LogBatchSettings {
            max_records: 10,
            flush: Duration::from_millis(20),
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            retention_days: 0,
        }
    }

    async fn wait_for(mut probe: impl FnMut() -> bool) {
        for _ in 0..500 {
            if probe() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not met in 5 s");
    }

    #[actix::test]
    async fn records_spool_while_the_store_fails_and_replay_once_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Flaky {
            inner: SqliteLogStore::open(&dir.path().join("runs.sqlite3")).expect("store"),
            down: AtomicBool::new(true),
            calls: AtomicUsize::new(0),
        });
        let spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        let actor = LogBatchActor::new(store.clone(), spool, settings()).start();
        // a running record, then its final state, then many more, all while the store is down
        actor.do_send(RecordRun(record(0, RunStatus::Running)));
        actor.do_send(RecordRun(record(0, RunStatus::Succeeded)));
        for i in 1..=35 {
            actor.do_send(RecordRun(record(i, RunStatus::Failed)));
        }
        let a = actor.clone();
        let status = move || {
            let a = a.clone();
            async move { a.send(GetLogStatus).await.expect("status") }
        };
        for _ in 0..500 {
            if status().await.spool_records == 37 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = status().await;
        assert_eq!(s.spool_records, 37, "every record spooled: {s:?}");
        assert!(!s.store_ok);
        assert_eq!(store.inner.count(&RunFilter::default()).await.expect("count"), 0);

        store.down.store(false, Ordering::SeqCst);
        let inner = &store.inner;
        let mut stored = 0;
        for _ in 0..500 {
            stored = inner.count(&RunFilter::default()).await.expect("count");
            if stored == 36 && status().await.spool_records == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stored, 36, "36 distinct runs, each stored once");
        let first = inner.get(&RunId("run-0000".into())).await.expect("get").expect("stored");
        assert_eq!(first.status, RunStatus::Succeeded, "the final record wins over the running one");
        let s = status().await;
        assert!(s.store_ok && s.spool_records == 0 && s.spool_bytes == 0, "{s:?}");

        // new records go straight to the store again
        actor.do_send(RecordRun(record(99, RunStatus::Succeeded)));
        wait_for(|| futures::executor::block_on(inner.count(&RunFilter::default())).is_ok_and(|n| n == 37)).await;
    }

    #[actix::test]
    async fn a_spool_left_by_a_crash_is_replayed_at_start_and_flush_writes_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        spool.append(&[record(1, RunStatus::Succeeded), record(2, RunStatus::Failed)]).expect("append");
        let store = Arc::new(SqliteLogStore::open(&dir.path().join("runs.sqlite3")).expect("store"));
        let actor = LogBatchActor::new(store.clone(), spool, settings()).start();
        actor.do_send(RecordRun(record(3, RunStatus::Succeeded)));
        actor.send(FlushLogs).await.expect("flush");
        wait_for(|| futures::executor::block_on(store.count(&RunFilter::default())).is_ok_and(|n| n == 3)).await;
        let reopened = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("reopen");
        assert!(reopened.is_empty(), "replayed spool is emptied");
    }

    #[actix::test]
    async fn interrupted_runs_of_this_worker_become_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteLogStore::open(&dir.path().join("runs.sqlite3")).expect("store");
        let mut mine = record(1, RunStatus::Running);
        mine.started_at = Some(Utc::now() - chrono::Duration::seconds(5));
        let mut other = record(2, RunStatus::Running);
        other.worker = WorkerId("w2".into());
        let done = record(3, RunStatus::Succeeded);
        store.append_batch(&[mine.clone(), other, done]).await.expect("append");
        let mut spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        let spooled = record(4, RunStatus::Running);
        let finished_in_spool = record(5, RunStatus::Running);
        spool.append(&[spooled.clone(), finished_in_spool.clone(), record(5, RunStatus::Succeeded)]).expect("append");
        let lost = interrupted_runs(&store, &spool, &WorkerId("w1".into()), Utc::now()).await.expect("query");
        let mut ids: Vec<&str> = lost.iter().map(|r| r.id.0.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["run-0001", "run-0004"]);
        assert!(lost.iter().all(|r| r.status == RunStatus::Lost && r.ended_at.is_some()));
        let m = lost.iter().find(|r| r.id == mine.id).expect("mine");
        assert!(m.duration_ms.is_some_and(|d| d >= 5000));
    }
}
