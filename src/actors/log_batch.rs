//! LogBatchActor: batches run records and writes them to the log store with one call per batch;
//! spools to disk while the store fails and replays the spool when it answers again.
//!
//! Guarantees (ARCHITECTURE.md "Actors"): a record handed to this actor is written, spooled or
//! (refused by the store for good) dead-lettered, never dropped; records of one run keep their
//! order (running before final); a retried batch never duplicates a run because the store
//! upserts by run id. A failing store never blocks the sender: `RecordRun` only pushes to a
//! buffer. Records the store refuses one by one ([`BackendError::Rejected`]) are retried with
//! the same backoff and, after [`REJECT_ATTEMPTS`] refusals, appended to
//! `data_dir/spool/dead-letter.jsonl` with an error log. Retention ([`LogStore::apply_retention`])
//! runs at start and hourly with the global `retention_days` and each job's override.
//!
//! Memory is bounded whatever the store does: the buffer holds at most `max_buffered_bytes`
//! (past it the buffer goes to the spool, and everything after queues behind it), one store call
//! carries at most `max_batch_bytes` of records (so a write stuck in a paused store holds that
//! much, plus the adapter's encodings of it, until [`WRITE_TIMEOUT`]), only one store call is in
//! flight at a time, and a replay reads the spool in chunks of the same size. Every spool and
//! dead-letter operation runs on the spool's own thread ([`SpoolHandle`]), never on this actor's.
//!
//! Limit: records younger than `flush_ms` (store up) or [`OUTAGE_FLUSH`] (store failing, when
//! every record goes to the fsynced spool) live only in memory and are lost if the process is
//! SIGKILLed before they are flushed; SIGTERM flushes them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::messages::{FlushLogs, GetLogStatus, LogStatus, RecordRun};
use super::spool::{Spool, SpoolHandle};
use crate::backend::{BackendError, JobStore, LogStore, RejectedRun, RetentionPolicy, RunFilter, RunQuery};
use crate::domain::{Backoff, RunId, RunRecord, RunStatus, WorkerId};

/// Bound of one store call; a slower store is treated as failing (and its batch spooled). Generous
/// because a batch of `max_records` final records may replace as many documents (FerretDB 1.x
/// takes ~20 ms per replacement on a few thousand documents); an unreachable server fails within
/// the driver's 3 s server selection anyway.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Flush interval while the store fails: records go to the fsynced spool this soon.
pub const OUTAGE_FLUSH: Duration = Duration::from_millis(20);
/// A record the store refuses this many times is dead-lettered.
pub const REJECT_ATTEMPTS: u32 = 3;
/// Bytes counted per buffered record besides its strings (fields, allocation overhead).
const RECORD_OVERHEAD_BYTES: usize = 512;

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
    /// Most bytes of records buffered in memory; past it they go to the spool.
    pub max_buffered_bytes: usize,
    /// Most bytes of records ([`record_bytes`]) per store call and per spool chunk a replay
    /// reads; a larger record goes alone.
    pub max_batch_bytes: usize,
}

/// Memory a buffered record holds, about.
pub(crate) fn record_bytes(r: &RunRecord) -> usize {
    r.output.len() + r.command.len() + r.err.len() + RECORD_OVERHEAD_BYTES
}

/// Batches and writes run records.
pub struct LogBatchActor {
    store: Arc<dyn LogStore>,
    spool: SpoolHandle,
    /// Refusals so far per record (run id and status).
    rejections: HashMap<(RunId, RunStatus), u32>,
    /// Where per-job retention comes from; `None` = global retention only.
    jobs: Option<Arc<dyn JobStore>>,
    settings: LogBatchSettings,
    buffer: Vec<RunRecord>,
    /// [`record_bytes`] of `buffer`.
    buffered_bytes: usize,
    flush_timer: Option<SpawnHandle>,
    /// The armed flush timer is the short outage one.
    flush_timer_fast: bool,
    retry_timer: Option<SpawnHandle>,
    /// A write or replay is in flight; flushes wait for it so records keep their order.
    busy: bool,
    backoff: Backoff,
    /// Records per store call: `max_records`, halved after each timeout (a slow store gets
    /// smaller batches, so every call can finish), doubled back after each success.
    chunk: usize,
    /// Bound of one store call ([`WRITE_TIMEOUT`]).
    write_timeout: Duration,
    store_ok: bool,
    last_error: Option<String>,
    written: u64,
    /// Woken when `busy` turns false (shutdown flush waits on them).
    idle_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Exits the process if this actor panics (issue 10: essential actors never die silently).
    _guard: super::essential::PanicGuard,
    /// Counts every record handed over and every failed write (README "Metrics").
    metrics: crate::metrics::Metrics,
}

impl LogBatchActor {
    /// An actor writing to `store`, spooling through `spool`.
    pub(crate) fn new(store: Arc<dyn LogStore>, spool: SpoolHandle, settings: LogBatchSettings) -> Self {
        let backoff = Backoff::new(settings.retry_initial, settings.retry_max);
        let chunk = settings.max_records.max(1);
        Self {
            store,
            spool,
            rejections: HashMap::new(),
            jobs: None,
            settings,
            buffer: Vec::new(),
            buffered_bytes: 0,
            flush_timer: None,
            flush_timer_fast: false,
            retry_timer: None,
            busy: false,
            backoff,
            store_ok: true,
            last_error: None,
            written: 0,
            chunk,
            write_timeout: WRITE_TIMEOUT,
            idle_waiters: Vec::new(),
            _guard: super::essential::PanicGuard::new("log_batch"),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// Reports to `metrics` (the process's): the records handed over, failed writes, the spool.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        metrics.set_spool_source(self.spool.levels());
        self.metrics = metrics;
        self
    }

    /// An actor writing to `store` and spooling to the file at `spool_path` (bounded by
    /// `spool_max_bytes`); refused records go to `dead-letter.jsonl` beside it. For embedding
    /// and benchmarks; [`crate::actors::start`] wires the node's own.
    ///
    /// # Errors
    /// When the spool file cannot be created or read, or its thread cannot start.
    pub fn with_spool_file(
        store: Arc<dyn LogStore>,
        spool_path: &std::path::Path,
        spool_max_bytes: u64,
        settings: LogBatchSettings,
    ) -> std::io::Result<Self> {
        let spool = SpoolHandle::start(Spool::open(spool_path, spool_max_bytes)?)?;
        Ok(Self::new(store, spool, settings))
    }

    /// Bounds each store call by `timeout` instead of [`WRITE_TIMEOUT`] (tests).
    #[cfg(test)]
    pub(crate) fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Takes per-job retention overrides from `jobs`.
    pub(crate) fn with_jobs(mut self, jobs: Arc<dyn JobStore>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Takes the whole buffer.
    fn take_buffer(&mut self) -> Vec<RunRecord> {
        self.buffered_bytes = 0;
        std::mem::take(&mut self.buffer)
    }

    /// Puts `records` back at the front of the buffer (a spool append failed).
    fn unshift(&mut self, mut records: Vec<RunRecord>) {
        self.buffered_bytes += records.iter().map(record_bytes).sum::<usize>();
        records.append(&mut self.buffer);
        self.buffer = records;
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.flush_timer.take() {
            ctx.cancel_future(h);
        }
        if self.buffer.is_empty() {
            return;
        }
        if !self.spool.is_empty() {
            // The store is failing (or replay is pending): keep order by queueing behind the
            // spool, even while a replay runs (it only replaces the lines it read).
            let batch = self.take_buffer();
            self.spool_batch(batch, ctx);
            self.schedule_retry(ctx);
            return;
        }
        if self.busy {
            return;
        }
        // At most `chunk` records and `max_batch_bytes` per write (a stuck write holds no more);
        // the rest follows as soon as this write is done.
        let mut n = 0;
        let mut bytes = 0;
        for r in self.buffer.iter().take(self.chunk) {
            let size = record_bytes(r);
            if n > 0 && bytes + size > self.settings.max_batch_bytes {
                break;
            }
            bytes += size;
            n += 1;
        }
        let batch: Vec<RunRecord> = self.buffer.drain(..n).collect();
        self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes);
        self.busy = true;
        let store = self.store.clone();
        let timeout = self.write_timeout;
        let fut = async move {
            let res = tokio::time::timeout(timeout, store.append_batch(&batch)).await;
            (batch, res)
        };
        ctx.spawn(fut.into_actor(self).map(|(batch, res), act, ctx| {
            act.set_idle();
            match res {
                Ok(Ok(())) => act.wrote(batch.len()),
                Ok(Err(BackendError::Rejected { rejected, .. })) => {
                    act.wrote(batch.len().saturating_sub(rejected.len()));
                    let retry = act.refused(&batch, &rejected, ctx);
                    if !retry.is_empty() {
                        act.spool_batch(retry, ctx);
                        act.schedule_retry(ctx);
                    }
                }
                Ok(Err(e)) => act.write_failed(batch, e.to_string(), ctx),
                Err(_) => {
                    act.timed_out();
                    let error = format!("no answer within {} ms", act.write_timeout.as_millis());
                    act.write_failed(batch, error, ctx);
                }
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

    /// A store call timed out: smaller batches from now on.
    fn timed_out(&mut self) {
        let smaller = (self.chunk / 2).max(1);
        if smaller < self.chunk {
            log::warn!("Log store too slow for the batch size; writing smaller batches. records_per_write={smaller}");
        }
        self.chunk = smaller;
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        self.chunk = (self.chunk * 2).min(self.settings.max_records.max(1));
        if !self.store_ok {
            log::info!("Log store is writable again.");
        }
        self.store_ok = true;
        self.last_error = None;
        self.backoff.reset();
    }

    fn write_failed(&mut self, batch: Vec<RunRecord>, error: String, ctx: &mut Context<Self>) {
        if self.store_ok {
            log::warn!(
                "Log store write failed, spooling to disk until it recovers. batch={} error={error}",
                batch.len()
            );
        } else {
            log::debug!("Log store still failing, spooling. batch={} error={error}", batch.len());
        }
        self.store_ok = false;
        self.last_error = Some(error);
        self.metrics.log_write_failed();
        self.spool_batch(batch, ctx);
        self.schedule_retry(ctx);
    }

    /// Counts the refusals of `rejected` records of `batch`; dead-letters those refused
    /// [`REJECT_ATTEMPTS`] times and returns the others, to retry.
    fn refused(&mut self, batch: &[RunRecord], rejected: &[RejectedRun], ctx: &mut Context<Self>) -> Vec<RunRecord> {
        let mut retry = Vec::new();
        for rej in rejected {
            // The record the store saw: the last one of that run and status in the batch.
            let Some(record) = batch.iter().rev().find(|r| r.id == rej.id && r.status == rej.status) else { continue };
            let key = (rej.id.clone(), rej.status);
            let attempts = {
                let n = self.rejections.entry(key.clone()).or_insert(0);
                *n += 1;
                *n
            };
            if attempts < REJECT_ATTEMPTS {
                log::warn!(
                    "Log store refused a run record; will retry. run={} job={} status={} attempt={attempts} error={}",
                    rej.id,
                    record.job,
                    rej.status,
                    rej.reason
                );
                retry.push(record.clone());
                continue;
            }
            self.rejections.remove(&key);
            self.dead_letter(record.clone(), rej.reason.clone(), ctx);
        }
        retry
    }

    /// Appends `record` to the dead-letter file (on the spool thread).
    fn dead_letter(&mut self, record: RunRecord, reason: String, ctx: &mut Context<Self>) {
        let kept = record.clone();
        let fut = self.spool.call(move |spool| {
            let res = spool.dead_letter(&record, &reason).map(|path| path.display().to_string());
            (record, reason, res)
        });
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| match res {
            Ok((record, reason, Ok(path))) => log::error!(
                "Log store refused a run record for good; kept in the dead-letter file. run={} job={} status={} file={path} error={reason}",
                record.id,
                record.job,
                record.status
            ),
            Ok((record, _, Err(e))) => {
                // Never drop: keep it in memory and try again with the next flush.
                log::error!("Cannot write the dead-letter file; keeping the record in memory. run={} error={e}", record.id);
                act.unshift(vec![record]);
            }
            Err(e) => {
                log::error!("Cannot reach the log spool thread; keeping the record in memory. run={} error={e}", kept.id);
                act.unshift(vec![kept]);
            }
        }));
    }

    /// Appends `batch` to the spool (on its thread); on failure keeps it in memory.
    fn spool_batch(&mut self, batch: Vec<RunRecord>, ctx: &mut Context<Self>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let fut = self.spool.append(batch);
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| act.spooled(n, res)));
    }

    /// The outcome of a spool append of `n` records.
    fn spooled(&mut self, n: usize, res: Result<usize, (Vec<RunRecord>, std::io::Error)>) {
        match res {
            Ok(0) => {}
            Ok(trimmed) => log::error!(
                "Log spool is over spool_max_bytes; outputs of the oldest spooled runs were cut to head and tail (no run dropped). trimmed={trimmed} spool_bytes={}",
                self.spool.bytes()
            ),
            Err((records, e)) if records.len() == n => {
                // Last resort: keep them in memory and retry; never drop.
                log::error!("Cannot write the log spool; keeping records in memory. records={n} error={e}");
                self.unshift(records);
            }
            Err((_, e)) => {
                log::error!("Log spool thread failed during an append; its records are lost. records={n} error={e}");
            }
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if self.retry_timer.is_some() {
            return;
        }
        let delay = self.backoff.next_delay();
        self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.retry_timer = None;
            act.replay(ctx);
        }));
    }

    /// Writes the spool to the store in order, chunk by chunk (each read on the spool thread,
    /// at most `chunk` records and `max_batch_bytes`); then drops what was
    /// written from the spool, keeping what was appended meanwhile.
    fn replay(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.schedule_retry(ctx);
            return;
        }
        if self.spool.is_empty() {
            self.flush(ctx);
            return;
        }
        self.busy = true;
        let store = self.store.clone();
        let spool = self.spool.clone();
        let mut chunk = self.chunk;
        let max_chunk = self.settings.max_records.max(1);
        let timeout = self.write_timeout;
        let max_bytes = self.settings.max_batch_bytes;
        let fut = async move {
            let mut out = ReplayOutcome::default();
            loop {
                let read = spool.call(move |s| s.read_chunk(out.offset, chunk, max_bytes)).await;
                let part = match read {
                    Ok(Ok(part)) => part,
                    Ok(Err(e)) => {
                        out.failure = Some((format!("cannot read the log spool: {e}"), false));
                        break;
                    }
                    Err(e) => {
                        out.failure = Some((e.to_string(), false));
                        break;
                    }
                };
                out.corrupt += part.corrupt_lines;
                if !part.records.is_empty() {
                    match tokio::time::timeout(timeout, store.append_batch(&part.records)).await {
                        Ok(Ok(())) => {
                            out.written += part.records.len();
                            // Back to full batches as soon as writes fit again (a timeout
                            // during the outage may have shrunk them).
                            chunk = (chunk * 2).min(max_chunk);
                        }
                        Ok(Err(BackendError::Rejected { rejected, .. })) => {
                            out.written += part.records.len().saturating_sub(rejected.len());
                            out.refused.push((part.records, rejected));
                        }
                        Ok(Err(e)) => {
                            out.failure = Some((e.to_string(), false));
                            break;
                        }
                        Err(_) => {
                            out.failure = Some((format!("no answer within {} ms", timeout.as_millis()), true));
                            break;
                        }
                    }
                }
                out.offset = part.next_offset;
                if part.at_end {
                    break;
                }
            }
            out
        };
        ctx.spawn(fut.into_actor(self).map(move |out, act, ctx| {
            if out.corrupt > 0 {
                log::warn!("Log spool had unreadable lines; skipped. lines={}", out.corrupt);
            }
            let mut keep = Vec::new();
            for (part, rejected) in &out.refused {
                keep.extend(act.refused(part, rejected, ctx));
            }
            let retry_count = keep.len();
            let progressed = out.offset > 0;
            let (written, offset) = (out.written, out.offset);
            // Only a replay that got somewhere rewrites the spool (on its thread).
            let commit =
                progressed.then(|| act.spool.call(move |s| s.replace_prefix(offset, &keep).map(|()| s.is_empty())));
            let commit = async move {
                Some(match commit?.await {
                    Ok(Ok(empty)) => Ok(empty),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                })
            };
            ctx.spawn(commit.into_actor(act).map(move |committed, act, ctx| {
                act.set_idle();
                if let Some(Err(e)) = &committed {
                    log::error!(
                        "Cannot rewrite the log spool after replay; records will be re-sent (idempotent). error={e}"
                    );
                }
                match out.failure {
                    None => {
                        log::info!("Log spool replayed to the store. records={written} to_retry={retry_count}");
                        act.wrote(written);
                        if !matches!(committed, Some(Ok(true))) {
                            act.schedule_retry(ctx);
                        }
                        act.flush(ctx);
                    }
                    Some((error, timed_out)) => {
                        act.written += written as u64;
                        if timed_out {
                            act.timed_out();
                        }
                        log::debug!("Log spool replay failed; will retry. written={written} error={error}");
                        act.store_ok = false;
                        act.last_error = Some(error);
                        act.metrics.log_write_failed();
                        act.flush(ctx);
                        act.schedule_retry(ctx);
                    }
                }
            }));
        }));
    }

    /// Arms the flush timer: `flush_ms`, or [`OUTAGE_FLUSH`] while records go to the spool.
    fn arm_flush(&mut self, ctx: &mut Context<Self>) {
        let fast = !self.spool.is_empty();
        if self.flush_timer.is_some() && (self.flush_timer_fast || !fast) {
            return;
        }
        if let Some(h) = self.flush_timer.take() {
            ctx.cancel_future(h);
        }
        let delay = if fast { OUTAGE_FLUSH.min(self.settings.flush) } else { self.settings.flush };
        self.flush_timer_fast = fast;
        self.flush_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.flush_timer = None;
            act.flush(ctx);
        }));
    }

    /// Applies retention: the global `retention_days` and each job's `retention_days`.
    fn purge(&mut self, ctx: &mut Context<Self>) {
        let default_days = self.settings.retention_days;
        let store = self.store.clone();
        let jobs = self.jobs.clone();
        let fut = async move {
            let mut policy = RetentionPolicy { default_days, per_job: Default::default() };
            if let Some(jobs) = jobs {
                // Without the overrides, a job keeping runs longer than the default would lose
                // them: skip this round rather than guess.
                let (all, _) = jobs.snapshot().await.map_err(|e| format!("cannot read the jobs' retention: {e}"))?;
                policy.per_job = all.into_iter().filter_map(|j| j.retention_days.map(|d| (j.name, d))).collect();
            }
            if policy.default_days == 0 && policy.per_job.values().all(|d| *d == 0) {
                return Ok((0, policy));
            }
            let deleted = store.apply_retention(&policy, Utc::now()).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((deleted, policy))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, _, _| match res {
            Ok((0, _)) => {}
            Ok((n, policy)) => log::info!(
                "Retention deleted old runs. deleted={n} default_days={} jobs_with_own_retention={}",
                policy.default_days,
                policy.per_job.len()
            ),
            Err(e) => log::warn!("Retention failed; will retry within the hour. error={e}"),
        }));
    }
}

/// What one replay did.
#[derive(Default)]
struct ReplayOutcome {
    /// Records written.
    written: usize,
    /// Chunks with records the store refused, and the refusals.
    refused: Vec<(Vec<RunRecord>, Vec<RejectedRun>)>,
    /// Spool offset up to which every record was written (or refused).
    offset: u64,
    /// Unreadable lines skipped.
    corrupt: u64,
    /// The error that stopped the replay, and whether it was a timeout.
    failure: Option<(String, bool)>,
}

impl Actor for LogBatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.spool.is_empty() {
            log::info!("Log spool holds records from an earlier run; replaying. records={}", self.spool.records());
            self.replay(ctx);
        }
        if self.settings.retention_days > 0 || self.jobs.is_some() {
            self.purge(ctx);
            ctx.run_interval(RETENTION_EVERY, |act, ctx| act.purge(ctx));
        }
    }
}

impl Handler<RecordRun> for LogBatchActor {
    type Result = ();

    fn handle(&mut self, msg: RecordRun, ctx: &mut Self::Context) {
        // README "Metrics": every record this process produces passes here, once.
        self.metrics.record_run(&msg.0);
        self.buffered_bytes += record_bytes(&msg.0);
        self.buffer.push(msg.0);
        if self.buffered_bytes > self.settings.max_buffered_bytes {
            // The store is slower than the runs (or a write is stuck): memory stays bounded,
            // these wait on disk, in order, and everything after queues behind them.
            log::debug!(
                "Buffered run records over max_buffered_bytes; spooling them. records={} bytes={}",
                self.buffer.len(),
                self.buffered_bytes
            );
            let batch = self.take_buffer();
            self.spool_batch(batch, ctx);
            self.schedule_retry(ctx);
        } else if self.buffer.len() >= self.settings.max_records {
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
            let batch = act.take_buffer();
            let store = act.store.clone();
            let spool = act.spool.clone();
            let behind_spool = !act.spool.is_empty() || act.busy;
            async move {
                if batch.is_empty() {
                    return (0, None);
                }
                let n = batch.len();
                let reason = if behind_spool {
                    "the log store is failing".to_owned()
                } else {
                    match tokio::time::timeout(Duration::from_secs(5), store.append_batch(&batch)).await {
                        Ok(Ok(())) => return (n, None),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "no answer within 5s".to_owned(),
                    }
                };
                log::info!("Spooling remaining run records for the next start. records={n} reason={reason}");
                (0, Some((n, spool.append(batch).await)))
            }
            .into_actor(act)
            .map(|(written, spooled), act, _| {
                act.written += written as u64;
                if let Some((n, res)) = spooled {
                    act.spooled(n, res);
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
            dead_lettered: self.spool.dead_lettered(),
            buffered_bytes: self.buffered_bytes as u64,
        })
    }
}

/// Records of runs this worker left `running` before `before` (a crash or kill of the node),
/// turned into `lost` records: from the spool (running records without a later final record)
/// and from the store. The spool is read once, streamed, on its thread. When the store cannot
/// be asked, the spool's are still returned, with the store's error.
pub(crate) async fn interrupted_runs(
    store: &dyn LogStore,
    spool: &SpoolHandle,
    worker: &WorkerId,
    before: DateTime<Utc>,
) -> (Vec<RunRecord>, Option<String>) {
    let own = worker.clone();
    let scanned = spool
        .call(move |s| {
            // Running records of this worker still open at the end of the file, and every run
            // with a final record in the spool.
            let mut open: HashMap<RunId, RunRecord> = HashMap::new();
            let mut order: Vec<RunId> = Vec::new();
            let mut finished: HashSet<RunId> = HashSet::new();
            let res = s.scan(|r| {
                open.remove(&r.id);
                if r.status.is_final() {
                    finished.insert(r.id);
                } else if r.status == RunStatus::Running && r.worker == own {
                    order.push(r.id.clone());
                    open.insert(r.id.clone(), r);
                }
            });
            let open: Vec<RunRecord> = order.into_iter().filter_map(|id| open.remove(&id)).collect();
            res.map(|_| (open, finished))
        })
        .await;
    let (mut open, finished) = match scanned {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            log::warn!("Cannot read the log spool for interrupted runs. error={e}");
            (Vec::new(), HashSet::new())
        }
        Err(e) => {
            log::warn!("Cannot reach the log spool thread for interrupted runs. error={e}");
            (Vec::new(), HashSet::new())
        }
    };
    let mut after = None;
    let mut error = None;
    loop {
        let query = RunQuery {
            filter: RunFilter {
                status: Some(RunStatus::Running),
                worker: Some(worker.clone()),
                to: Some(before),
                ..RunFilter::default()
            },
            after: after.take(),
            skip: 0,
            limit: 1000,
        };
        let page = match store.query(&query).await {
            Ok(page) => page,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        };
        for r in page.runs {
            // A run whose final record waits in the spool is not interrupted.
            if !open.iter().any(|o| o.id == r.id) && !finished.contains(&r.id) {
                open.push(r);
            }
        }
        match page.next_cursor.as_deref().and_then(crate::backend::RunCursor::decode) {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let now = Utc::now();
    let lost = open
        .into_iter()
        .map(|mut r| {
            r.status = RunStatus::Lost;
            r.err =
                "lost: the node stopped (crash or kill) while the run was in progress; its outcome is unknown".into();
            r.ended_at = Some(now);
            r.duration_ms = r.started_at.map(|s| (now - s).num_milliseconds().max(0) as u64);
            r
        })
        .collect();
    (lost, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::embedded::SqliteLogStore;
    use crate::backend::faulty::{Fault, Faulty};
    use crate::domain::{Fence, JobName, RunId, Trigger};

    /// The real SQLite run log under `dir`, behind a fault injector.
    fn store(dir: &std::path::Path) -> Arc<Faulty<SqliteLogStore>> {
        Arc::new(Faulty::new(SqliteLogStore::open(&dir.join("runs.sqlite3")).expect("store"), "test run log"))
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
            max_buffered_bytes: 64 * 1024 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
        }
    }

    fn handle(spool: Spool) -> SpoolHandle {
        SpoolHandle::start(spool).expect("spool thread")
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
        let store = store(dir.path());
        store.fail("append_batch", Fault::Down);
        let spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        let actor = LogBatchActor::new(store.clone(), handle(spool), settings()).start();
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
        assert_eq!(store.inner().count(&RunFilter::default()).await.expect("count"), 0);

        store.heal("append_batch");
        let inner = store.inner();
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
    async fn refused_records_are_retried_then_dead_lettered_and_the_rest_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        // The store refuses a document it cannot take, as MongoDB does with a validation error.
        store.fail(
            "append_batch",
            Fault::Refuse(Arc::new(|r: &RunRecord| {
                (r.output == "poison").then(|| "code 121: Document failed validation".to_owned())
            })),
        );
        let spool = Spool::open(&dir.path().join("spool").join("runs.jsonl"), u64::MAX).expect("spool");
        let actor = LogBatchActor::new(store.clone(), handle(spool), settings()).start();
        let mut poison = record(1, RunStatus::Failed);
        poison.output = "poison".into();
        actor.do_send(RecordRun(poison.clone()));
        for i in 2..=5 {
            actor.do_send(RecordRun(record(i, RunStatus::Succeeded)));
        }
        let a = actor.clone();
        let mut status = a.send(GetLogStatus).await.expect("status");
        for _ in 0..500 {
            status = a.send(GetLogStatus).await.expect("status");
            if status.dead_lettered == 1 && status.spool_records == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((status.dead_lettered, status.spool_records), (1, 0), "{status:?}");
        assert_eq!(store.inner().count(&RunFilter::default()).await.expect("count"), 4, "the others are stored");
        assert!(store.calls("append_batch") >= REJECT_ATTEMPTS as usize, "retried before giving up");
        let text = std::fs::read_to_string(dir.path().join("spool").join("dead-letter.jsonl")).expect("dead letter");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["record"]["id"], poison.id.0);
        assert!(line["error"].as_str().is_some_and(|e| e.contains("121")));
        assert!(status.store_ok, "a refused record is not an outage");
    }

    #[actix::test]
    async fn while_the_store_fails_records_reach_the_spool_within_the_outage_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        store.fail("append_batch", Fault::Down);
        let spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        let slow = LogBatchSettings {
            max_records: 100,
            flush: Duration::from_secs(3600),
            retry_initial: Duration::from_secs(3600),
            retry_max: Duration::from_secs(3600),
            ..settings()
        };
        let actor = LogBatchActor::new(store, handle(spool), slow).start();
        // The first record fails to write (forced by a flush) and opens the spool.
        actor.do_send(RecordRun(record(1, RunStatus::Succeeded)));
        actor.send(FlushLogs).await.expect("flush");
        assert_eq!(actor.send(GetLogStatus).await.expect("status").spool_records, 1);
        // Now a record goes to disk within OUTAGE_FLUSH, not after flush_ms (an hour here).
        actor.do_send(RecordRun(record(2, RunStatus::Succeeded)));
        tokio::time::sleep(OUTAGE_FLUSH * 10).await;
        assert_eq!(actor.send(GetLogStatus).await.expect("status").spool_records, 2);
    }

    #[actix::test]
    async fn a_store_too_slow_for_the_batch_gets_smaller_batches_and_everything_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        // 2 ms per record per call.
        store.fail("append_batch", Fault::DelayPerRecord(Duration::from_millis(2)));
        // A spool of 200 records left by a crash: one call of 200 needs 400 ms, over the bound.
        let mut spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        let left: Vec<RunRecord> = (0..200).map(|i| record(i, RunStatus::Succeeded)).collect();
        spool.append(&left).expect("append");
        let settings = LogBatchSettings { max_records: 200, ..settings() };
        let actor = LogBatchActor::new(store.clone(), handle(spool), settings)
            .with_write_timeout(Duration::from_millis(150))
            .start();
        for i in 200..300 {
            actor.do_send(RecordRun(record(i, RunStatus::Succeeded)));
        }
        let mut status = actor.send(GetLogStatus).await.expect("status");
        for _ in 0..1000 {
            status = actor.send(GetLogStatus).await.expect("status");
            if status.spool_records == 0 && status.buffered == 0 && status.store_ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(status.spool_records == 0 && status.store_ok, "{status:?}");
        assert_eq!(store.inner().count(&RunFilter::default()).await.expect("count"), 300, "every record once");
    }

    #[actix::test]
    async fn past_max_buffered_bytes_records_go_to_the_spool_while_a_write_hangs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        // Writes hang (no answer, no error) until healed.
        store.fail("append_batch", Fault::Hang);
        let spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        let bound = 200 * 1024;
        let settings = LogBatchSettings { max_records: 2, max_buffered_bytes: bound, ..settings() };
        let actor = LogBatchActor::new(store.clone(), handle(spool), settings).start();
        // 100 records of 64 KiB: 6.4 MiB, 32 times the bound, while the first write hangs.
        let output = "o".repeat(64 * 1024);
        for i in 0..100 {
            let mut r = record(i, RunStatus::Succeeded);
            r.output = output.clone();
            actor.do_send(RecordRun(r));
            let status = actor.send(GetLogStatus).await.expect("status");
            assert!(status.buffered_bytes as usize <= bound, "buffer over its bound: {status:?}");
        }
        let mut status = actor.send(GetLogStatus).await.expect("status");
        for _ in 0..500 {
            status = actor.send(GetLogStatus).await.expect("status");
            if status.spool_records == 98 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status.spool_records, 98, "all but the hanging batch wait on disk: {status:?}");
        // The store answers again: every record lands once, in order, and the spool empties.
        store.heal("append_batch");
        for _ in 0..1000 {
            status = actor.send(GetLogStatus).await.expect("status");
            if status.spool_records == 0 && store.inner().count(&RunFilter::default()).await.expect("count") == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.inner().count(&RunFilter::default()).await.expect("count"), 100, "{status:?}");
        assert_eq!(status.spool_records, 0, "{status:?}");
    }

    #[actix::test]
    async fn one_store_call_carries_at_most_max_batch_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        // The write hangs (a paused store): what it holds is what it took from the buffer.
        store.fail("append_batch", Fault::Hang);
        let spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        let big = |i| {
            let mut r = record(i, RunStatus::Succeeded);
            r.output = "o".repeat(64 * 1024);
            r
        };
        let settings = LogBatchSettings { max_records: 10, max_batch_bytes: 3 * record_bytes(&big(0)), ..settings() };
        let actor = LogBatchActor::new(store.clone(), handle(spool), settings).start();
        for i in 0..10 {
            actor.do_send(RecordRun(big(i)));
        }
        let mut status = actor.send(GetLogStatus).await.expect("status");
        for _ in 0..500 {
            status = actor.send(GetLogStatus).await.expect("status");
            if store.calls("append_batch") == 1 && status.buffered == 7 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((store.calls("append_batch"), status.buffered), (1, 7), "3 records in the write: {status:?}");
        assert_eq!(status.buffered_bytes as usize, 7 * record_bytes(&big(0)));
        store.heal("append_batch");
        wait_for(|| futures::executor::block_on(store.inner().count(&RunFilter::default())).is_ok_and(|n| n == 10))
            .await;
        assert!(store.calls("append_batch") >= 4, "10 records in writes of at most 3");
    }

    #[actix::test]
    async fn a_spool_left_by_a_crash_is_replayed_at_start_and_flush_writes_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(&dir.path().join("spool.jsonl"), u64::MAX).expect("spool");
        spool.append(&[record(1, RunStatus::Succeeded), record(2, RunStatus::Failed)]).expect("append");
        let store = Arc::new(SqliteLogStore::open(&dir.path().join("runs.sqlite3")).expect("store"));
        let actor = LogBatchActor::new(store.clone(), handle(spool), settings()).start();
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
        let (lost, error) = interrupted_runs(&store, &handle(spool), &WorkerId("w1".into()), Utc::now()).await;
        assert_eq!(error, None);
        let mut ids: Vec<&str> = lost.iter().map(|r| r.id.0.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["run-0001", "run-0004"]);
        assert!(lost.iter().all(|r| r.status == RunStatus::Lost && r.ended_at.is_some()));
        let m = lost.iter().find(|r| r.id == mine.id).expect("mine");
        assert!(m.duration_ms.is_some_and(|d| d >= 5000));
    }
}
