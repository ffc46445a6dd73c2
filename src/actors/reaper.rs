//! LostRunsActor: records, exactly once cluster-wide, the runs of a worker that vanished while
//! they ran (ARCHITECTURE.md "Claims, spread and failover": a dead worker's runs become `lost`,
//! never stay `running`).
//!
//! It follows [`Claims::watch_lost`] (running marks that went with an expired session), claims
//! the right to record each run with [`Claims::claim_request`] (`lost-<run id>`, so of all the
//! nodes that saw it one records it), keeps what the log store already knows of the run (its
//! command, start, last known output) and writes the `lost` record through the LogBatchActor.
//! A run whose record is already final (the worker ended it before its session went) is left
//! alone. Every master and worker runs one; on a single node the stream never yields.
//!
//! A lost attempt of a job with `retry = { on = [.., "lost"] }` gets its next attempt here (the
//! node that recorded the loss is the one that decides, once): a pending run request any worker
//! may claim, so the retry runs elsewhere ([`super::retry`]).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use super::messages::RecordRun;
use crate::backend::{Claims, JobStore, LogStore, LostStream, RunningMark};
use crate::domain::{retry, Backoff, Fence, RunRecord, RunStatus, Trigger, WorkerId};

/// Pause before the lost-run watch is set up again.
const REWATCH: Duration = Duration::from_secs(1);
/// Attempts to claim and record one lost run while the stores fail.
const RECORD_ATTEMPTS: u32 = 8;
/// Wait before looking at a vanished run: a worker that lost only its session (not its life)
/// writes the final records of runs that just ended within its log flush interval, and a final
/// record must not be overwritten by `lost`.
const SETTLE: Duration = Duration::from_secs(1);

/// Follows lost runs and records them.
pub struct LostRunsActor {
    claims: Arc<dyn Claims>,
    logs: Arc<dyn LogStore>,
    jobs: Arc<dyn JobStore>,
    log: Recipient<RecordRun>,
    /// This process's worker, whose runs its scheduler records itself (`on_session_loss`).
    own: Option<WorkerId>,
    warned: Option<std::time::Instant>,
    unwarned: u64,
    /// Zone of jobs without `tz` (when a retry of a lost run is superseded by the next tick).
    default_tz: chrono_tz::Tz,
    /// Exits the process if this actor panics.
    _guard: super::essential::PanicGuard,
    /// Where its claims are timed, with the claims store's kind (README "Metrics").
    meter: Option<(crate::metrics::Metrics, &'static str)>,
}

/// At most one "run lost" warning this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

impl LostRunsActor {
    /// A recorder of lost runs writing through `log`, leaving the runs of `own` (this process's
    /// worker, if it runs one) to its scheduler.
    pub fn new(
        claims: Arc<dyn Claims>,
        logs: Arc<dyn LogStore>,
        jobs: Arc<dyn JobStore>,
        log: Recipient<RecordRun>,
        own: Option<WorkerId>,
    ) -> Self {
        Self {
            claims,
            logs,
            jobs,
            log,
            own,
            warned: None,
            unwarned: 0,
            default_tz: chrono_tz::UTC,
            _guard: super::essential::PanicGuard::new("lost_runs"),
            meter: None,
        }
    }

    /// Times its claims in `metrics`, labelled with the claims store's kind `store`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics, store: &'static str) -> Self {
        self.meter = Some((metrics, store));
        self
    }

    /// The zone of jobs without `tz` (config `default_tz`).
    pub fn with_default_tz(mut self, tz: chrono_tz::Tz) -> Self {
        self.default_tz = tz;
        self
    }

    fn follow(&mut self, ctx: &mut Context<Self>) {
        let claims = self.claims.clone();
        ctx.spawn(async move { claims.watch_lost().await }.into_actor(self).map(
            |res: Result<LostStream, _>, _, ctx| match res {
                Ok(stream) => {
                    ctx.add_stream(stream);
                }
                Err(e) => {
                    log::warn!("Cannot follow lost runs; retrying. error={e}");
                    ctx.run_later(REWATCH, |act, ctx| act.follow(ctx));
                }
            },
        ));
    }
}

impl Actor for LostRunsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.follow(ctx);
    }
}

impl StreamHandler<RunningMark> for LostRunsActor {
    fn handle(&mut self, mark: RunningMark, ctx: &mut Self::Context) {
        if self.own.as_ref() == Some(&mark.worker) {
            // Our own session expired: the scheduler finishes or kills these runs and records
            // what really happened.
            return;
        }
        let (claims, logs, jobs, log) = (self.claims.clone(), self.logs.clone(), self.jobs.clone(), self.log.clone());
        let (job, run, worker) = (mark.job.clone(), mark.run.clone(), mark.worker.clone());
        let meter = self.meter.clone();
        let (worker_id, default_tz) = (self.own.clone().unwrap_or_else(|| WorkerId("master".into())), self.default_tz);
        let fut = async move {
            let recorded = record_lost(mark, claims, logs, Arc::clone(&jobs), log.clone(), meter).await?;
            // Its next attempt (job `retry` with `lost`), decided here, once.
            if let Ok(Some(def)) = jobs.get(&recorded.job).await {
                let ended = recorded.ended_at.unwrap_or_else(Utc::now);
                let next = retry::next_attempt(
                    &def,
                    RunStatus::Lost,
                    recorded.attempt,
                    recorded.scheduled_at,
                    ended,
                    default_tz,
                )
                .in_chain(recorded.trigger);
                let params = recorded.params.clone().unwrap_or_default();
                super::retry::follow_up(next, def, params, worker_id, jobs, log).await;
            }
            Some(recorded)
        };
        ctx.spawn(fut.into_actor(self).map(move |recorded, act, _| {
            if recorded.is_none() {
                return;
            }
            // A dead worker loses all its runs at once: one warning per burst, the rest at debug.
            if act.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
                act.unwarned += 1;
                log::debug!("Run lost with its worker; recorded as lost. job={job} run={run} worker={worker}");
            } else {
                log::warn!(
                    "Run lost with its worker; recorded as lost. job={job} run={run} worker={worker} earlier_unlogged={}",
                    act.unwarned
                );
                act.warned = Some(std::time::Instant::now());
                act.unwarned = 0;
            }
        }));
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // Not the end of the actor (actix's default): follow again.
        ctx.run_later(REWATCH, |act, ctx| act.follow(ctx));
    }
}

/// Claims the right to record `mark`'s run and records it `lost` (keeping what is known of it);
/// the record when this node recorded it.
async fn record_lost(
    mark: RunningMark,
    claims: Arc<dyn Claims>,
    logs: Arc<dyn LogStore>,
    jobs: Arc<dyn JobStore>,
    log: Recipient<RecordRun>,
    meter: Option<(crate::metrics::Metrics, &'static str)>,
) -> Option<RunRecord> {
    let request = format!("lost-{}", mark.run);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut claimed = None;
    for attempt in 1..=RECORD_ATTEMPTS {
        let asked = std::time::Instant::now();
        let outcome = claims.claim_request(&mark.job, &request).await;
        if let Some((metrics, store)) = &meter {
            metrics.claim(store, asked.elapsed(), usize::from(outcome.is_err()));
        }
        match outcome {
            Ok(outcome) => {
                claimed = Some(outcome);
                break;
            }
            Err(e) if attempt == RECORD_ATTEMPTS => {
                log::error!("Cannot record a lost run; it stays `running` until its worker restarts. job={} run={} worker={} error={e}", mark.job, mark.run, mark.worker);
            }
            Err(_) => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    let Some(Some(fence)) = claimed else { return None };
    tokio::time::sleep(SETTLE).await;
    let known = logs.get(&mark.run).await.ok().flatten();
    if known.as_ref().is_some_and(|r| r.status.is_final()) {
        log::debug!("A vanished run had already ended; nothing to record. job={} run={}", mark.job, mark.run);
        return None;
    }
    let command = match &known {
        Some(r) => r.command.clone(),
        None => jobs.get(&mark.job).await.ok().flatten().map(|j| j.command).unwrap_or_default(),
    };
    let now = Utc::now();
    // A mark written with its claim exists before the spawn: without a record in the log
    // store the run may never have started.
    let started_at = known.as_ref().and_then(|r| r.started_at);
    let err = if known.is_some() {
        format!(
            "lost: worker {} stopped answering (its etcd session expired) while the run was in progress; its outcome is unknown",
            mark.worker
        )
    } else {
        format!(
            "lost: worker {} stopped answering (its etcd session expired) after it claimed this tick; the run may not have started and its outcome is unknown",
            mark.worker
        )
    };
    // What the running record would have said: the mark carries the claim's fence and trigger.
    let fence = known.as_ref().map(|r| r.fence).or(mark.fence).unwrap_or(Fence(fence.0));
    let record = RunRecord {
        id: mark.run.clone(),
        job: mark.job.clone(),
        command,
        status: RunStatus::Lost,
        trigger: known.as_ref().map(|r| r.trigger).or(mark.trigger).unwrap_or(Trigger::Schedule),
        scheduled_at: mark.scheduled_at,
        dispatched_at: known.as_ref().map_or(mark.since, |r| r.dispatched_at),
        started_at,
        ended_at: Some(now),
        duration_ms: started_at.map(|s| u64::try_from((now - s).num_milliseconds()).unwrap_or(0)),
        exit_code: None,
        signal: None,
        err,
        output: known.as_ref().map(|r| r.output.clone()).unwrap_or_default(),
        output_bytes: known.as_ref().map_or(0, |r| r.output_bytes),
        output_truncated: known.as_ref().is_some_and(|r| r.output_truncated),
        worker: mark.worker.clone(),
        attempt: known.as_ref().map_or(1, |r| r.attempt),
        fence,
        job_version: known.as_ref().and_then(|r| r.job_version),
        pgid: known.as_ref().and_then(|r| r.pgid),
        proc_start_ticks: known.as_ref().and_then(|r| r.proc_start_ticks),
        fire_at: known.as_ref().and_then(|r| r.fire_at),
        params: known.as_ref().and_then(|r| r.params.clone()),
    };
    log.do_send(RecordRun(record.clone()));
    Some(record)
}
