//! SchedulerActor: owns the plan and the table of runs this node dispatched; turns due ticks
//! into claimed, policy-checked runs for the executor pool.
//!
//! One timer is armed for the earliest planned tick (no polling, no scan of every job): a
//! wake-up pops only the due ticks from the [`Plan`] heap. For each tick the actor takes the
//! claim through the [`Claims`] port (ARCHITECTURE.md: exactly once per (job, tick)), then
//! applies the job's concurrency policy against live runs anywhere, then dispatches. Job
//! changes arrive only through the WatchActor.
//!
//! Cluster behaviour (ARCHITECTURE.md "Claims, spread and failover"), the same code on a single
//! node, where this worker is always rank 0 and every claim succeeds:
//! - Each job's due ticks wait in a per-job queue and are claimed one at a time, in order, so a
//!   later tick is never claimed before an earlier one of the same job.
//! - The live workers (refreshed every heartbeat) are ranked per job by rendezvous hashing
//!   ([`super::rank`]); rank 0 claims at the tick, rank k at tick + k x `failover_grace_ms`,
//!   and skips the claim when the claims cache already shows the tick taken.
//! - A failed claim (store unreachable, session lost) is retried with backoff while the tick is
//!   within `misfire_grace_ms`; older ticks are folded into one `missed` range, claimed as a
//!   whole when the store answers again (so it is recorded once cluster-wide, and only for the
//!   ticks nobody ran). One warning per outage.
//! - A tick to run gets its run id before its claim: the running mark goes to the store in the
//!   same transaction as the claim ([`TickRequest::mark`]; under `forbid` only when the job is
//!   idle everywhere), so a worker that dies between its claim and the spawn leaves a mark whose
//!   session expiry gets the tick recorded `lost` (README "Cluster mode": one run or one
//!   `lost`/`missed`/`skipped` record per claimed tick). A retry of a failed claim reuses the
//!   run id, so a claim whose answer was lost is recognized as won.
//! - Catch-up after downtime: on the first sync the last claimed tick of every job is read
//!   from the claims store ([`Claims::last_ticks`]); the ticks between it and start-up are
//!   split per the job's `catchup` ([`crate::domain::catchup::plan_gap`]) into one `missed`
//!   range and ticks to run (`trigger = "catchup"`, their own `scheduled_at`), queued before
//!   the job's planned ticks and claimed like them (so once cluster-wide, in order). The plan
//!   does not fire until that read is done.
//! - Backfill: a run-now request carrying a range ([`BackfillRequest`]) is claimed once; its
//!   winner runs the range's ticks one after another (`trigger = "backfill"`).
//! - When the membership session is lost, runs are finished or killed per
//!   `scheduler.on_session_loss`; on a new session the marks of runs still going are published
//!   again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

mod marks;
mod policy;
mod queue;

use super::messages::{
    GetSchedulerStatus, JobRemoved, JobUpserted, KillReason, KillRequested, KillRun, RecordRun, Resynced, RunAdopted,
    RunFinished, RunLaunch, RunRequested, RunSpec, SchedulerStatus, Shutdown, StartRun, WatchLost,
};
use super::plan::{Due, Missed, Plan};
use super::rank;
use crate::backend::{
    BackendError, Claims, JobStore, Membership, RunningMark, SessionEvent, Signal, TickClaim, TickRequest,
};
use crate::config::SessionLossPolicy;
use crate::domain::catchup::{self, BackfillRequest};
use crate::domain::retry;
use crate::domain::{
    labels, Backoff, ConcurrencyPolicy, Fence, Job, JobName, Labels, Revision, RunId, RunRecord, RunStatus, Trigger,
    WorkerId, WorkerInfo,
};
use marks::{MarkBatch, MarkOp, MarkQueue};
use policy::Decision;
use queue::{JobQueue, Pending};

/// Settings of the scheduler and of the runs it dispatches.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// This worker.
    pub worker: WorkerInfo,
    /// Zone of jobs without `tz`.
    pub default_tz: Tz,
    /// Ticks later than this are recorded `missed`.
    pub misfire_grace: Duration,
    /// Membership heartbeat interval.
    pub heartbeat: Duration,
    /// Shell for commands.
    pub shell: String,
    /// SIGTERM -> SIGKILL grace.
    pub kill_grace: Duration,
    /// Output cap per run.
    pub max_output_bytes: usize,
    /// Cluster: how long rank k waits (k times this) before claiming a tick.
    pub failover_grace: Duration,
    /// Cluster: what to do with running jobs when the membership session is lost.
    pub on_session_loss: SessionLossPolicy,
    /// This node's part of every run's launch (allowed users, death signal).
    pub launch: RunLaunch,
}

/// First retry delay of a failed claim.
const CLAIM_RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay of a failed claim.
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(2);
/// At most one "ticks missed" warning this often (the others go to debug).
const MISSED_WARN_EVERY: Duration = Duration::from_secs(30);
/// Retries of reading the last claimed ticks at start-up before catch-up is given up.
const CATCHUP_READ_ATTEMPTS: u32 = 5;
/// The reason (start of `err`) of a tick recorded `skipped` because no live worker matches the
/// job's selector (README "Worker labels").
pub const NO_ELIGIBLE_WORKER: &str = "no_eligible_worker";

/// Ports and peers the scheduler talks to.
pub struct SchedulerPeers {
    /// Tick claims and running marks.
    pub claims: Arc<dyn Claims>,
    /// Membership (heartbeats).
    pub members: Arc<dyn Membership>,
    /// Job store (kill signals for runs on other workers under `replace`).
    pub jobs: Arc<dyn JobStore>,
    /// Executor pool: start.
    pub start: Recipient<StartRun>,
    /// Executor pool: kill.
    pub kill: Recipient<KillRun>,
    /// Log batching.
    pub log: Recipient<RecordRun>,
    /// This process's metrics: missed ticks and claim round trips (README "Metrics").
    pub metrics: crate::metrics::Metrics,
    /// The claims adapter's kind (`etcd`, `embedded`), the claim metrics' `store` label.
    pub claims_kind: &'static str,
}

#[derive(Debug, Clone)]
struct LiveRun {
    job: JobName,
    scheduled_at: DateTime<Utc>,
    since: DateTime<Utc>,
    fence: Fence,
    trigger: Trigger,
    /// Attempt of its tick (job `retry`), from 1.
    attempt: u32,
    /// Run parameters (run now with `env`), carried to its retries.
    params: BTreeMap<String, String>,
}

impl LiveRun {
    /// The running mark of this run (`run`) on `worker`.
    fn mark(&self, run: RunId, worker: WorkerId) -> RunningMark {
        RunningMark {
            job: self.job.clone(),
            run,
            worker,
            scheduled_at: self.scheduled_at,
            since: self.since,
            fence: Some(self.fence),
            trigger: Some(self.trigger),
        }
    }
}

/// What a dispatched run carries besides its tick: its attempt and its parameters.
#[derive(Debug, Clone)]
struct RunExtra {
    attempt: u32,
    params: BTreeMap<String, String>,
}

impl RunExtra {
    /// A first attempt without parameters (a scheduled tick).
    fn first() -> Self {
        Self { attempt: 1, params: BTreeMap::new() }
    }

    /// Puts on `record` what the run carried: its attempt and its parameters.
    fn stamp(&self, record: &mut RunRecord) {
        record.attempt = self.attempt;
        record.params = (!self.params.is_empty()).then(|| self.params.clone());
    }
}

/// A claim waiting in the batch.
#[derive(Debug)]
struct BatchedClaim {
    job: JobName,
    generation: u64,
    item: Pending,
    rank: usize,
    with_running: bool,
    /// The run the tick becomes, marked running with the claim (ticks to run only).
    mark: Option<RunningMark>,
    /// Policy forbid: mark only when the job is idle everywhere.
    mark_if_idle: bool,
}

/// The scheduler.
pub struct SchedulerActor {
    settings: SchedulerSettings,
    peers: SchedulerPeers,
    jobs: HashMap<JobName, Job>,
    plan: Plan,
    timer: Option<(DateTime<Utc>, SpawnHandle)>,
    running: HashMap<RunId, LiveRun>,
    revision: Revision,
    synced: bool,
    draining: bool,
    drained: Vec<tokio::sync::oneshot::Sender<()>>,
    claim_failing: bool,
    /// Ticks waiting for their claim, per job.
    queues: HashMap<JobName, JobQueue>,
    /// Live distcron workers (ids and labels), as of the last heartbeat; empty = unknown (rank 0).
    live: Vec<(String, Labels)>,
    /// The membership session is lost (cluster): claims fail until it is renewed.
    session_lost: bool,
    /// Generation of the last job queue made.
    queue_generation: u64,
    /// Claims to send in the next batch.
    claim_batch: Vec<BatchedClaim>,
    /// A flush of `claim_batch` is scheduled.
    claim_flush: bool,
    /// Running-mark changes not yet sent, in order (shutdown waits for them).
    marks: MarkQueue,
    /// Mark changes are failing (one warning per outage).
    marks_failing: bool,
    marks_retry: Option<Backoff>,
    /// When the last "ticks missed" warning was logged.
    missed_warned: Option<std::time::Instant>,
    /// When this actor started: missed ranges before it were missed while this node was down.
    started_at: DateTime<Utc>,
    /// Catch-up: the first sync's `now` while the last claimed ticks are being read (the plan
    /// does not fire meanwhile); `None` once done.
    catchup_from: Option<DateTime<Utc>>,
    /// Catch-up was set up (once per process).
    catchup_done: bool,
    /// Backfill ticks waiting to run, per job, each with its request's fence.
    backfills: HashMap<JobName, VecDeque<(DateTime<Utc>, Fence)>>,
    /// The running backfill run of each job with a backfill in progress.
    backfill_runs: HashMap<RunId, JobName>,
    /// Exits the process if this actor panics (issue 10: essential actors never die silently).
    _guard: super::essential::PanicGuard,
}

impl SchedulerActor {
    /// A scheduler with an empty plan (filled by `Resynced`).
    pub fn new(settings: SchedulerSettings, peers: SchedulerPeers) -> Self {
        Self {
            settings,
            peers,
            jobs: HashMap::new(),
            plan: Plan::default(),
            timer: None,
            running: HashMap::new(),
            revision: Revision(0),
            synced: false,
            draining: false,
            drained: Vec::new(),
            claim_failing: false,
            queues: HashMap::new(),
            live: Vec::new(),
            session_lost: false,
            queue_generation: 0,
            claim_batch: Vec::new(),
            claim_flush: false,
            marks: MarkQueue::default(),
            marks_failing: false,
            marks_retry: None,
            missed_warned: None,
            started_at: Utc::now(),
            catchup_from: None,
            catchup_done: false,
            backfills: HashMap::new(),
            backfill_runs: HashMap::new(),
            _guard: super::essential::PanicGuard::new("scheduler"),
        }
    }

    /// This worker's rank for `job` among the live workers (0 = owner).
    fn rank(&self, job: &JobName) -> usize {
        self.placement(job).rank
    }

    /// This worker's place for `job`: plain rendezvous among the live workers for a job without
    /// a selector; with one, the matching workers first (README "Worker labels").
    fn placement(&self, job: &JobName) -> rank::Placement {
        let me = self.worker().0.as_str();
        let selector = self.jobs.get(job).map(|j| &j.selector).filter(|s| !s.is_empty());
        let Some(selector) = selector else {
            let live = self.live.iter().map(|(w, _)| w.as_str());
            let eligible_live = self.live.iter().filter(|(w, _)| w != me).count() + 1;
            return rank::Placement { rank: rank::rank(job.as_str(), me, live), eligible: true, eligible_live };
        };
        let mine = labels::matches(selector, &self.settings.worker.labels);
        let live = self.live.iter().map(|(w, l)| (w.as_str(), labels::matches(selector, l)));
        let mut placement = rank::placement(job.as_str(), me, mine, live);
        if self.live.is_empty() && !mine {
            // The live workers are not known yet (before the first listing): a matching worker
            // may well be alive, so a non-matching one waits a failover grace before skipping.
            placement.rank = placement.rank.max(1);
        }
        placement
    }

    /// Why a claimed tick of `job` is not run here: this worker's labels do not match the job's
    /// selector (the `err` of its `skipped` record), or `None` when it may run it.
    fn ineligible_reason(&self, job: &JobName) -> Option<String> {
        let p = self.placement(job);
        if p.eligible {
            return None;
        }
        let selector = self.jobs.get(job).map(|j| labels::format_labels(&j.selector)).unwrap_or_default();
        Some(if p.eligible_live == 0 {
            format!("{NO_ELIGIBLE_WORKER}: no live worker matches selector {selector}")
        } else {
            format!(
                "{NO_ELIGIBLE_WORKER}: no live worker matching selector {selector} claimed the tick within its failover grace"
            )
        })
    }

    /// Records a claimed tick (or run request) of `job` `skipped` because no eligible worker
    /// took it: once cluster-wide, since the claim is. `prepared` is the tick's run and whether
    /// its mark went with the claim (cleared here).
    #[allow(clippy::too_many_arguments)]
    fn record_no_eligible(
        &mut self,
        job: &JobName,
        tick: DateTime<Utc>,
        fence: Fence,
        trigger: Trigger,
        extra: &RunExtra,
        reason: String,
        prepared: Option<(RunningMark, bool)>,
        ctx: &mut Context<Self>,
    ) {
        let Some(def) = self.jobs.get(job) else { return };
        log::info!(
            "Tick skipped: no live worker matches the job's selector. job={job} tick={tick} trigger={trigger:?}"
        );
        let mut record = self.not_run_record(def, RunStatus::Skipped, trigger, tick, fence, reason);
        extra.stamp(&mut record);
        if let Some((mark, marked)) = prepared {
            // The record takes the prepared run id, so the lost-run recorder finds it final.
            record.id = mark.run.clone();
            if marked {
                self.queue_mark(MarkOp::Clear(mark.job, mark.run), ctx);
            }
        }
        self.peers.log.do_send(RecordRun(record));
    }

    fn worker(&self) -> &WorkerId {
        &self.settings.worker.id
    }

    /// Records a claimed run request (run-now or retry) whose policy could not be checked
    /// (the live runs could not be listed) as `skipped`, so it has its one account.
    fn record_unchecked_request(
        &mut self,
        job: &JobName,
        tick: DateTime<Utc>,
        fence: Fence,
        trigger: Trigger,
        extra: &RunExtra,
    ) {
        let Some(def) = self.jobs.get(job) else { return };
        let reason = "the job's live runs could not be listed to apply its concurrency policy (claims store unavailable); not started".to_owned();
        let mut record = self.not_run_record(def, RunStatus::Skipped, trigger, tick, fence, reason);
        extra.stamp(&mut record);
        self.peers.log.do_send(RecordRun(record));
    }

    /// A record of `def`'s tick that did not run (`status`, `reason`), written by this worker
    /// under `fence`, with the job's version.
    fn not_run_record(
        &self,
        def: &Job,
        status: RunStatus,
        trigger: Trigger,
        tick: DateTime<Utc>,
        fence: Fence,
        reason: String,
    ) -> RunRecord {
        RunRecord::not_run(
            def.name.clone(),
            def.command.clone(),
            status,
            trigger,
            tick,
            self.worker().clone(),
            fence,
            reason,
        )
        .with_job_version(def.version)
    }

    /// Plans (or unplans) `job` from now.
    fn upsert_job(&mut self, job: Job, now: DateTime<Utc>) {
        let name = job.name.clone();
        let unchanged = self.jobs.get(&name).is_some_and(|old| *old == job) && self.plan.contains(&name);
        if !unchanged {
            if job.enabled {
                match job.schedule() {
                    Ok(schedule) => {
                        let tz = job.zone(self.settings.default_tz);
                        // Jitter: the tick fires at tick + offset; claims stay keyed by the tick.
                        let offset = job.jitter_offset();
                        if self.plan.upsert_jittered(name.clone(), schedule, tz, offset, now).is_none() {
                            log::info!("Job has no future fire time; not planned. job={name}");
                        }
                    }
                    Err(e) => {
                        log::warn!("Job has an invalid schedule and will not run; fix it through the API. job={name} error={e}");
                        self.plan.remove(&name);
                    }
                }
            } else {
                self.plan.remove(&name);
                self.queues.remove(&name);
            }
        }
        self.jobs.insert(name, job);
    }

    /// Arms the single timer for the earliest planned tick.
    fn rearm(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let next = self.plan.peek();
        if let Some((at, handle)) = self.timer {
            if Some(at) == next {
                return;
            }
            ctx.cancel_future(handle);
            self.timer = None;
        }
        if let Some(at) = next {
            let delay = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            let handle = ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.fire_due(ctx);
            });
            self.timer = Some((at, handle));
        }
    }

    fn fire_due(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.catchup_from.is_some() {
            return;
        }
        let now = Utc::now();
        let grace = chrono::Duration::from_std(self.settings.misfire_grace).unwrap_or(chrono::Duration::MAX);
        for Due { job, tick, missed } in self.plan.pop_due(now, grace) {
            if !self.queues.contains_key(&job) {
                self.queue_generation += 1;
                self.queues.insert(job.clone(), JobQueue::new(self.queue_generation));
            }
            let Some(queue) = self.queues.get_mut(&job) else { continue };
            queue.items.extend(missed.map(Pending::Missed));
            queue.items.extend(tick.map(Pending::Tick));
            self.pump(job, ctx);
        }
        self.rearm(ctx);
    }

    /// [`Self::record_missed`] of a claimed tick that had its run id: the record takes that id
    /// (so the lost-run recorder, finding it final, adds nothing) and the mark is cleared.
    fn record_missed_run(
        &mut self,
        job: &JobName,
        m: &Missed,
        fence: Fence,
        why: &str,
        prepared: Option<(RunningMark, bool)>,
        ctx: &mut Context<Self>,
    ) {
        let run = prepared.as_ref().map(|(mark, _)| mark.run.clone());
        self.record_missed_as(job, m, fence, why, run);
        if let Some((mark, true)) = prepared {
            self.queue_mark(MarkOp::Clear(mark.job, mark.run), ctx);
        }
    }

    fn record_missed(&mut self, job: &JobName, m: &Missed, fence: Fence, why: &str) {
        self.record_missed_as(job, m, fence, why, None);
    }

    fn record_missed_as(&mut self, job: &JobName, m: &Missed, fence: Fence, why: &str, run: Option<RunId>) {
        let Some(def) = self.jobs.get(job) else { return };
        self.peers.metrics.missed_ticks(job, m.count);
        let err = format!(
            "missed {}{} tick(s) from {} to {}: {why}",
            m.count,
            if m.more { "+" } else { "" },
            m.first.to_rfc3339(),
            m.last.to_rfc3339()
        );
        // One warning per burst (an outage misses ticks of every job at once), the rest at debug.
        let quiet = self.missed_warned.is_some_and(|at| at.elapsed() < MISSED_WARN_EVERY);
        if quiet {
            log::debug!("Ticks missed. job={job} count={} first={} last={}", m.count, m.first, m.last);
        } else {
            log::warn!(
                "Ticks missed; recorded as missed. job={job} count={} first={} last={} reason={why}",
                m.count,
                m.first,
                m.last
            );
        }
        let mut record = RunRecord::not_run(
            job.clone(),
            def.command.clone(),
            RunStatus::Missed,
            Trigger::Schedule,
            m.first,
            self.worker().clone(),
            fence,
            err,
        )
        .with_job_version(def.version);
        if let Some(run) = run {
            record.id = run;
        }
        self.peers.log.do_send(RecordRun(record));
        if !quiet {
            self.missed_warned = Some(std::time::Instant::now());
        }
    }

    /// Starts the claim of `job`'s oldest waiting tick, at once when this worker owns the job,
    /// else after its rank's failover grace.
    fn pump(&mut self, job: JobName, ctx: &mut Context<Self>) {
        let now = Utc::now();
        let grace = chrono::Duration::from_std(self.settings.misfire_grace).unwrap_or(chrono::Duration::MAX);
        let rank = self.rank(&job);
        let failover = self.settings.failover_grace;
        // Jitter: a tick is due (and late) from its fire time, tick + offset.
        let offset = self.jobs.get(&job).map_or_else(chrono::Duration::zero, Job::jitter_offset);
        let Some(queue) = self.queues.get_mut(&job) else { return };
        if queue.busy {
            return;
        }
        queue::fold_expired(&mut queue.items, now - grace - offset);
        let stale = queue.stale_mark();
        let Some(front) = queue.items.front() else {
            self.queues.remove(&job);
            self.clear_stale(stale, ctx);
            return;
        };
        let at = queue::claim_at(front, rank, failover).checked_add_signed(offset).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
        queue.busy = true;
        let generation = queue.generation;
        self.clear_stale(stale, ctx);
        if wait.is_zero() {
            self.attempt(job, generation, rank, ctx);
        } else {
            ctx.run_later(wait, move |act, ctx| act.attempt(job, generation, rank, ctx));
        }
    }

    /// Clears the mark of a tick that left its queue after a claim that may have written it.
    fn clear_stale(&mut self, stale: Option<RunningMark>, ctx: &mut Context<Self>) {
        if let Some(mark) = stale {
            log::debug!("Clearing the mark of a tick whose claim answer was lost. job={} run={}", mark.job, mark.run);
            self.queue_mark(MarkOp::Clear(mark.job, mark.run), ctx);
        }
    }

    /// `job`'s queue, if it is still the one of `generation`.
    fn queue_of(&mut self, job: &JobName, generation: u64) -> Option<&mut JobQueue> {
        self.queues.get_mut(job).filter(|q| q.generation == generation)
    }

    /// Claims `job`'s oldest waiting tick (skipped without a round trip when this worker is
    /// not the owner and the claims cache shows the tick taken).
    fn attempt(&mut self, job: JobName, generation: u64, rank: usize, ctx: &mut Context<Self>) {
        let draining = self.draining;
        let known = if rank > 0 { self.peers.claims.known_claim(&job) } else { None };
        let policy = self.jobs.get(&job).map(|j| j.concurrency).unwrap_or_default();
        let worker = self.worker().clone();
        let Some(queue) = self.queue_of(&job, generation) else { return };
        let Some(item) = queue.items.front().cloned() else {
            self.queues.remove(&job);
            return;
        };
        if draining {
            // Shutting down: the other workers take these ticks over.
            self.queues.remove(&job);
            return;
        }
        if known.is_some_and(|k| k >= item.last()) && !queue.uncertain {
            queue.items.pop_front();
            queue.busy = false;
            log::debug!("Tick already claimed by the owner. job={job} tick={} rank={rank}", item.last());
            self.pump(job, ctx);
            return;
        }
        // Only a tick to run needs the live runs; `allow` needs no look.
        let with_running = matches!(item, Pending::Tick(_) | Pending::CatchUp(_)) && policy != ConcurrencyPolicy::Allow;
        // The run id is chosen before the claim: its mark is written with the claim.
        let trigger = if matches!(item, Pending::CatchUp(_)) { Trigger::CatchUp } else { Trigger::Schedule };
        let mark = match item {
            Pending::Tick(tick) | Pending::CatchUp(tick) => Some(
                queue
                    .front_mark
                    .get_or_insert_with(|| RunningMark {
                        job: job.clone(),
                        run: RunId::generate(),
                        worker,
                        scheduled_at: tick,
                        since: Utc::now(),
                        fence: None,
                        trigger: Some(trigger),
                    })
                    .clone(),
            ),
            Pending::Missed(_) => None,
        };
        let mark_if_idle = policy == ConcurrencyPolicy::Forbid;
        self.claim_batch.push(BatchedClaim { job, generation, item, rank, with_running, mark, mark_if_idle });
        if !self.claim_flush {
            // Every claim that becomes due in this turn goes in one batch (one etcd txn).
            self.claim_flush = true;
            ctx.run_later(Duration::ZERO, |act, ctx| act.flush_claims(ctx));
        }
    }

    /// Sends the batched claims with one call; each result goes back to its job's queue.
    fn flush_claims(&mut self, ctx: &mut Context<Self>) {
        self.claim_flush = false;
        let batch = std::mem::take(&mut self.claim_batch);
        if batch.is_empty() {
            return;
        }
        let requests: Vec<TickRequest> = batch
            .iter()
            .map(|c| TickRequest {
                job: c.job.clone(),
                tick: c.item.last(),
                with_running: c.with_running,
                mark: c.mark.clone(),
                mark_if_idle: c.mark_if_idle,
            })
            .collect();
        let claims = self.peers.claims.clone();
        let (metrics, store) = (self.peers.metrics.clone(), self.peers.claims_kind);
        let claimed = async move {
            let asked = std::time::Instant::now();
            let results = claims.claim_ticks(&requests).await;
            metrics.claim(store, asked.elapsed(), results.iter().filter(|r| r.is_err()).count());
            results
        };
        ctx.spawn(claimed.into_actor(self).map(move |results, act, ctx| {
            let mut results = results.into_iter();
            for c in batch {
                let result = results.next().unwrap_or_else(|| {
                    Err(BackendError::Corrupt { backend: "claims", message: "a batched claim got no answer".into() })
                });
                act.claimed(c, result, ctx);
            }
        }));
    }

    /// Queues a running-mark change; the changes go to the store in order, batched, one batch
    /// in flight at a time (so a mark is never cleared before it was put).
    fn queue_mark(&mut self, op: MarkOp, ctx: &mut Context<Self>) {
        if self.marks.push(op) {
            ctx.run_later(Duration::ZERO, |act, ctx| act.flush_marks(ctx));
        }
    }

    fn flush_marks(&mut self, ctx: &mut Context<Self>) {
        let Some(MarkBatch { puts, clears }) = self.marks.take_batch() else {
            self.check_drained();
            return;
        };
        let claims = self.peers.claims.clone();
        let fut = async move {
            if let Err(e) = claims.mark_running_many(&puts).await {
                return Err((e, MarkBatch { puts, clears }));
            }
            claims.clear_running_many(&clears).await.map_err(|e| (e, MarkBatch { puts: Vec::new(), clears }))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            match res {
                Ok(()) => {
                    if act.marks_failing {
                        log::info!("Running marks published again.");
                    }
                    act.marks_failing = false;
                    act.marks_retry = None;
                    ctx.run_later(Duration::ZERO, |act, ctx| act.flush_marks(ctx));
                }
                Err((e, unsent)) => {
                    if !act.marks_failing {
                        log::warn!("Cannot publish running marks; retrying (forbid on other workers may not see these runs meanwhile). error={e}");
                    }
                    act.marks_failing = true;
                    act.marks.requeue(unsent);
                    let delay = act
                        .marks_retry
                        .get_or_insert_with(|| Backoff::new(CLAIM_RETRY_MIN, CLAIM_RETRY_MAX))
                        .next_delay();
                    ctx.run_later(delay, |act, ctx| act.flush_marks(ctx));
                }
            }
        }));
    }

    fn claimed(&mut self, c: BatchedClaim, result: Result<Option<TickClaim>, BackendError>, ctx: &mut Context<Self>) {
        let BatchedClaim { job, generation, item, rank, mark, .. } = c;
        match result {
            Ok(outcome) => {
                self.claim_recovered();
                if let Some(queue) = self.queue_of(&job, generation) {
                    queue.front_settled();
                }
                if outcome.as_ref().is_some_and(|c| c.marked) {
                    crate::test_hooks::abort_after_claim();
                    crate::test_hooks::block_after_claim();
                }
                // The claimed tick's run: its id, and whether its mark went with the claim.
                let prepared = |claim: &TickClaim| mark.clone().map(|m| (m, claim.marked));
                match (outcome, item) {
                    (None, item) => {
                        log::debug!("Tick claimed by another worker. job={job} tick={} rank={rank}", item.last())
                    }
                    (Some(claim), Pending::Tick(tick) | Pending::CatchUp(tick))
                        if !self.jobs.get(&job).is_some_and(|j| j.enabled) =>
                    {
                        log::debug!(
                            "Claimed tick of a job deleted or disabled meanwhile; dropped. job={job} tick={tick}"
                        );
                        if let Some((m, true)) = prepared(&claim) {
                            self.queue_mark(MarkOp::Clear(m.job, m.run), ctx);
                        }
                    }
                    (Some(claim), Pending::Tick(tick)) => {
                        // Jitter: lateness counts from the fire time, tick + offset.
                        let offset = self.jobs.get(&job).map_or_else(chrono::Duration::zero, Job::jitter_offset);
                        let late = Utc::now() - tick - offset;
                        if late
                            > chrono::Duration::from_std(self.settings.misfire_grace).unwrap_or(chrono::Duration::MAX)
                        {
                            let m = Missed { count: 1, more: false, first: tick, last: tick };
                            let prepared = prepared(&claim);
                            self.record_missed_run(
                                &job,
                                &m,
                                claim.fence,
                                "claimed later than misfire_grace_ms",
                                prepared,
                                ctx,
                            );
                        } else if let Some(reason) = self.ineligible_reason(&job) {
                            let prepared = prepared(&claim);
                            self.record_no_eligible(
                                &job,
                                tick,
                                claim.fence,
                                Trigger::Schedule,
                                &RunExtra::first(),
                                reason,
                                prepared,
                                ctx,
                            );
                        } else {
                            let prepared = prepared(&claim);
                            self.dispatch(
                                job.clone(),
                                tick,
                                claim.fence,
                                Trigger::Schedule,
                                claim.running,
                                prepared,
                                RunExtra::first(),
                                ctx,
                            );
                        }
                    }
                    (Some(claim), Pending::CatchUp(tick)) => {
                        let prepared = prepared(&claim);
                        if let Some(reason) = self.ineligible_reason(&job) {
                            self.record_no_eligible(
                                &job,
                                tick,
                                claim.fence,
                                Trigger::CatchUp,
                                &RunExtra::first(),
                                reason,
                                prepared,
                                ctx,
                            );
                            self.pump(job, ctx);
                            return;
                        }
                        self.dispatch(
                            job.clone(),
                            tick,
                            claim.fence,
                            Trigger::CatchUp,
                            claim.running,
                            prepared,
                            RunExtra::first(),
                            ctx,
                        );
                    }
                    (Some(claim), Pending::Missed(m)) => {
                        if let Some(m) = self.unclaimed_part(&job, m, claim.previous) {
                            let why = if m.last < self.started_at {
                                "no worker ran them (every node was down); the job's catchup policy did not run them"
                            } else if self.claim_failing || self.session_lost {
                                "the claims store could not be reached in time"
                            } else {
                                "nothing could claim them within misfire_grace_ms (store outage, or every worker late)"
                            };
                            self.record_missed(&job, &m, claim.fence, why);
                        }
                    }
                }
                self.pump(job, ctx);
            }
            Err(e) => {
                self.claim_failed(&job, item.last(), &e);
                let Some(queue) = self.queue_of(&job, generation) else { return };
                // The claim (and its mark) may have been written; the retry reuses the mark.
                queue.uncertain |= mark.is_some();
                let delay =
                    queue.retry.get_or_insert_with(|| Backoff::new(CLAIM_RETRY_MIN, CLAIM_RETRY_MAX)).next_delay();
                ctx.run_later(delay, move |act, ctx| {
                    if let Some(queue) = act.queue_of(&job, generation) {
                        queue.busy = false;
                        act.pump(job, ctx);
                    }
                });
            }
        }
    }

    /// The ticks of `m` nobody claimed before us (see [`queue::unclaimed_part`]).
    fn unclaimed_part(&self, job: &JobName, m: Missed, previous: Option<DateTime<Utc>>) -> Option<Missed> {
        let def = self.jobs.get(job)?;
        let schedule = def.schedule().ok()?;
        queue::unclaimed_part(&schedule, def.zone(self.settings.default_tz), m, previous)
    }

    fn claim_failed(&mut self, job: &JobName, tick: DateTime<Utc>, error: &crate::backend::BackendError) {
        if !self.claim_failing {
            log::warn!("Cannot claim ticks: the claims store is failing; nothing runs until it recovers. job={job} tick={tick} error={error}");
        }
        self.claim_failing = true;
    }

    fn claim_recovered(&mut self) {
        if self.claim_failing {
            log::info!("Claims store reachable again; claiming resumed.");
        }
        self.claim_failing = false;
    }

    /// Applies the concurrency policy to a claimed tick and hands it to the pool; `prepared` is
    /// the run chosen before the claim and whether its mark went with the claim.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        job: JobName,
        tick: DateTime<Utc>,
        fence: Fence,
        trigger: Trigger,
        live_anywhere: Vec<RunningMark>,
        prepared: Option<(RunningMark, bool)>,
        extra: RunExtra,
        ctx: &mut Context<Self>,
    ) {
        // The run id chosen before the claim (scheduled ticks), and whether its mark is written.
        let (run, marked) = match &prepared {
            Some((mark, marked)) => (mark.run.clone(), *marked),
            None => (RunId::generate(), false),
        };
        let since = prepared.as_ref().map_or_else(Utc::now, |(mark, _)| mark.since);
        if marked && (self.draining || !self.jobs.contains_key(&job)) {
            self.queue_mark(MarkOp::Clear(job.clone(), run.clone()), ctx);
        }
        let Some(def) = self.jobs.get(&job).cloned() else {
            log::debug!("Claimed tick of a job deleted meanwhile; dropped. job={job}");
            return;
        };
        if self.draining {
            let reason = "missed: the node was shutting down when the tick was claimed".to_owned();
            let mut record = self.not_run_record(&def, RunStatus::Missed, trigger, tick, fence, reason);
            record.id = run;
            record.attempt = extra.attempt;
            self.peers.log.do_send(RecordRun(record));
            return;
        }
        let local = self.running.iter().filter(|(_, r)| r.job == job).map(|(id, _)| id.clone());
        let live = policy::live_runs(&run, self.worker(), local, live_anywhere);
        let decision = if trigger == Trigger::Backfill { Decision::Run } else { policy::decide(def.concurrency, live) };
        match decision {
            Decision::Run => {}
            Decision::Skip { alive, reason } => {
                log::info!(
                    "Tick skipped: previous run still alive (policy forbid). job={job} tick={tick} alive_run={alive}"
                );
                let mut record = self.not_run_record(&def, RunStatus::Skipped, trigger, tick, fence, reason);
                // The skipped record takes the prepared run id: a mark written anyway (the live
                // run is only in this worker's table) is cleared, and if this worker dies first
                // the lost-run recorder finds the record final.
                record.id = run.clone();
                extra.stamp(&mut record);
                self.peers.log.do_send(RecordRun(record));
                if marked {
                    self.queue_mark(MarkOp::Clear(job, run), ctx);
                }
                return;
            }
            Decision::Replace { local, remote } => {
                for run in local {
                    log::info!("Replacing a live run (policy replace). job={job} run={run}");
                    self.peers.kill.do_send(KillRun { run, reason: KillReason::Replaced });
                }
                for run in remote {
                    log::info!("Replacing a live run on another worker (policy replace). job={job} run={run}");
                    let jobs = self.peers.jobs.clone();
                    let signal = Signal::Kill { job: job.clone(), run: Some(run) };
                    actix::spawn(async move {
                        if let Err(e) = jobs.signal(signal).await {
                            log::warn!("Cannot signal a remote run to stop (policy replace). error={e}");
                        }
                    });
                }
            }
        }
        let now = Utc::now();
        let spec = RunSpec {
            run: run.clone(),
            job_version: Some(def.version),
            job: job.clone(),
            command: def.command.clone(),
            shell: self.settings.shell.clone(),
            // Run parameters on top of the job's env (a parameter wins over the job's value).
            env: def.env.iter().chain(&extra.params).map(|(k, v)| (k.clone(), v.clone())).collect(),
            working_dir: def.working_dir.clone(),
            timeout: (def.timeout_secs > 0).then(|| Duration::from_secs(def.timeout_secs)),
            kill_grace: self.settings.kill_grace,
            max_output_bytes: self.settings.max_output_bytes,
            scheduled_at: tick,
            dispatched_at: now,
            trigger,
            attempt: extra.attempt,
            fence,
            launch: RunLaunch {
                limits: def.limits,
                run_as_user: def.run_as_user.clone(),
                run_as_group: def.run_as_group.clone(),
                ..self.settings.launch.clone()
            },
            fire_at: (trigger == Trigger::Schedule && def.jitter_secs > 0).then(|| tick + def.jitter_offset()),
            params: extra.params.clone(),
        };
        let live = LiveRun {
            job: job.clone(),
            scheduled_at: tick,
            since,
            fence,
            trigger,
            attempt: extra.attempt,
            params: extra.params,
        };
        // Run-now requests, and a claim that found only stale marks of this worker under
        // `forbid`: the mark follows the claim.
        let mark = (!marked).then(|| live.mark(run.clone(), self.worker().clone()));
        self.running.insert(run.clone(), live);
        if let Some(mark) = mark {
            self.queue_mark(MarkOp::Put(mark), ctx);
        }
        log::debug!("Dispatching run. job={job} run={run} tick={tick} trigger={trigger:?} attempt={}", spec.attempt);
        // do_send ignores mailbox bounds: the pool's own queue is the bound that records overflow.
        self.peers.start.do_send(StartRun(spec));
    }

    /// Publishes this worker's info (joining membership first when `join`), then refreshes the
    /// live workers used for ranking.
    fn announce(&self, ctx: &mut Context<Self>, join: bool) {
        let mut info = self.settings.worker.clone();
        info.running = u32::try_from(self.running.len()).unwrap_or(u32::MAX);
        info.last_heartbeat = Utc::now();
        let members = self.peers.members.clone();
        ctx.spawn(
            async move {
                let published = if join { members.join(&info).await } else { members.heartbeat(&info).await };
                (published, members.live().await)
            }
            .into_actor(self)
            .map(move |(published, live), act, _| {
                if let Err(e) = published {
                    if join {
                        log::warn!("Cannot join membership; will retry with heartbeats. error={e}");
                    } else {
                        log::warn!("Membership heartbeat failed. error={e}");
                    }
                }
                act.set_live(live);
            }),
        );
    }

    fn set_live(&mut self, live: Result<Vec<WorkerInfo>, BackendError>) {
        match live {
            // Workers with no capacity (the seed's, listed for /worker/list) take no part.
            Ok(live) => {
                let live: Vec<(String, Labels)> =
                    live.into_iter().filter(|w| w.capacity > 0).map(|w| (w.id.0, w.labels)).collect();
                if live != self.live {
                    let ids: Vec<&str> = live.iter().map(|(w, _)| w.as_str()).collect();
                    log::info!("Live workers changed; ranking updated. workers={}", ids.join(","));
                }
                self.live = live;
            }
            Err(e) => log::debug!("Cannot list live workers; keeping the last ranking. error={e}"),
        }
    }

    /// Reads the last claimed tick of every job (retrying a few times), then queues each
    /// planned job's catch-up and lets the plan fire.
    fn load_catchup(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        let claims = self.peers.claims.clone();
        ctx.spawn(async move { claims.last_ticks().await }.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(last) => act.queue_catchup(&last),
                Err(e) if attempt < CATCHUP_READ_ATTEMPTS => {
                    log::warn!("Cannot read the last claimed ticks; retrying. attempt={attempt} error={e}");
                    ctx.run_later(CLAIM_RETRY_MAX, move |act, ctx| act.load_catchup(attempt + 1, ctx));
                    return;
                }
                Err(e) => {
                    log::warn!(
                        "Cannot read the last claimed ticks; ticks missed while down are not caught up. error={e}"
                    )
                }
            }
            act.catchup_from = None;
            let queued: Vec<JobName> = act.queues.keys().cloned().collect();
            for job in queued {
                act.pump(job, ctx);
            }
            act.fire_due(ctx);
        }));
    }

    /// Queues, per planned job with a last claimed tick, its gap up to the first sync: one
    /// missed range, then the ticks to run per its `catchup` policy.
    fn queue_catchup(&mut self, last: &HashMap<JobName, DateTime<Utc>>) {
        let Some(until) = self.catchup_from else { return };
        let now = Utc::now();
        let mut caught = 0usize;
        let names: Vec<JobName> = self.jobs.keys().filter(|n| self.plan.contains(n)).cloned().collect();
        for name in names {
            let (Some(def), Some(&from)) = (self.jobs.get(&name), last.get(&name)) else { continue };
            let Ok(schedule) = def.schedule() else { continue };
            let gap = catchup::plan_gap(&schedule, def.zone(self.settings.default_tz), &def.catchup, from, until, now);
            let mut items: Vec<Pending> = Vec::new();
            if let Some(m) = gap.missed {
                items.push(Pending::Missed(Missed { count: m.count, more: m.more, first: m.first, last: m.last }));
            }
            if !gap.run.is_empty() {
                log::info!(
                    "Catching up ticks missed while no worker ran the job. job={name} runs={} policy={:?}",
                    gap.run.len(),
                    def.catchup.policy
                );
            }
            items.extend(gap.run.into_iter().map(Pending::CatchUp));
            if items.is_empty() {
                continue;
            }
            caught += 1;
            if !self.queues.contains_key(&name) {
                self.queue_generation += 1;
                self.queues.insert(name.clone(), JobQueue::new(self.queue_generation));
            }
            if let Some(queue) = self.queues.get_mut(&name) {
                for item in items.into_iter().rev() {
                    queue.items.push_front(item);
                }
            }
        }
        log::info!("Catch-up after start-up set up. jobs_with_gaps={caught} until={until}");
    }

    /// The winner of a backfill request runs its ticks one after another.
    fn start_backfill(&mut self, job: JobName, request: &BackfillRequest, fence: Fence, ctx: &mut Context<Self>) {
        let Some(def) = self.jobs.get(&job) else {
            log::warn!("Backfill of a job this worker does not know; dropped. job={job}");
            return;
        };
        let Ok(schedule) = def.schedule() else { return };
        let now = Utc::now().max(request.to);
        match catchup::backfill_ticks(&schedule, def.zone(self.settings.default_tz), request.from, request.to, now) {
            Ok(ticks) => {
                log::info!(
                    "Backfill claimed; running its ticks one after another. job={job} ticks={} from={} to={}",
                    ticks.len(),
                    request.from,
                    request.to
                );
                let queue = self.backfills.entry(job.clone()).or_default();
                let idle = queue.is_empty() && !self.backfill_runs.values().any(|j| *j == job);
                queue.extend(ticks.into_iter().map(|t| (t, fence)));
                if idle {
                    self.next_backfill(job, ctx);
                }
            }
            Err(e) => log::warn!("Backfill range refused; nothing runs. job={job} error={e}"),
        }
    }

    /// Dispatches `job`'s next backfill tick, if any.
    fn next_backfill(&mut self, job: JobName, ctx: &mut Context<Self>) {
        if self.draining {
            if let Some(left) = self.backfills.remove(&job) {
                log::warn!("Shutting down; backfill ticks left unrun. job={job} left={}", left.len());
            }
            return;
        }
        let Some((tick, fence)) = self.backfills.get_mut(&job).and_then(VecDeque::pop_front) else {
            self.backfills.remove(&job);
            return;
        };
        let mark = RunningMark {
            job: job.clone(),
            run: RunId::generate(),
            worker: self.worker().clone(),
            scheduled_at: tick,
            since: Utc::now(),
            fence: Some(fence),
            trigger: Some(Trigger::Backfill),
        };
        let run = mark.run.clone();
        self.dispatch(
            job.clone(),
            tick,
            fence,
            Trigger::Backfill,
            Vec::new(),
            Some((mark, false)),
            RunExtra::first(),
            ctx,
        );
        if self.running.contains_key(&run) {
            self.backfill_runs.insert(run, job);
        } else {
            // Not started (job gone): go on with the next one.
            ctx.run_later(Duration::ZERO, move |act, ctx| act.next_backfill(job, ctx));
        }
    }

    fn check_drained(&mut self) {
        if self.draining && self.running.is_empty() && self.marks.is_idle() {
            for tx in self.drained.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.announce(ctx, true);
        ctx.add_stream(self.peers.members.session_events());
        ctx.run_interval(self.settings.heartbeat, |act, ctx| act.announce(ctx, false));
        if let Some(ms) = crate::test_hooks::value("panic_scheduler_after_ms").and_then(|v| v.parse().ok()) {
            ctx.run_later(Duration::from_millis(ms), |_, _| panic!("test hook panic_scheduler_after_ms fired"));
        }
    }
}

impl StreamHandler<SessionEvent> for SchedulerActor {
    fn handle(&mut self, event: SessionEvent, ctx: &mut Self::Context) {
        match event {
            SessionEvent::Lost => {
                self.session_lost = true;
                match self.settings.on_session_loss {
                    SessionLossPolicy::Kill => {
                        log::warn!(
                            "Membership session lost; killing this worker's runs (on_session_loss = kill). running={}",
                            self.running.len()
                        );
                        for run in self.running.keys() {
                            self.peers.kill.do_send(KillRun { run: run.clone(), reason: KillReason::SessionLost });
                        }
                    }
                    SessionLossPolicy::Finish => {
                        log::warn!("Membership session lost; runs continue and record their outcome when they end (on_session_loss = finish). running={}", self.running.len());
                    }
                }
            }
            SessionEvent::Renewed => {
                self.session_lost = false;
                if self.settings.on_session_loss == SessionLossPolicy::Finish {
                    // The old session's marks are gone; runs still going are visible again.
                    let marks: Vec<RunningMark> =
                        self.running.iter().map(|(run, live)| live.mark(run.clone(), self.worker().clone())).collect();
                    for mark in marks {
                        self.queue_mark(MarkOp::Put(mark), ctx);
                    }
                }
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The session stream ending must not stop the scheduler (actix's default would).
    }
}

impl Handler<Resynced> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: Resynced, ctx: &mut Self::Context) {
        let now = Utc::now();
        let keep: std::collections::HashSet<JobName> = msg.jobs.iter().map(|j| j.name.clone()).collect();
        let gone: Vec<JobName> = self.jobs.keys().filter(|n| !keep.contains(*n)).cloned().collect();
        for name in gone {
            self.jobs.remove(&name);
            self.plan.remove(&name);
            self.queues.remove(&name);
        }
        for job in msg.jobs {
            self.upsert_job(job, now);
        }
        self.revision = msg.revision;
        self.synced = true;
        log::info!(
            "Plan synced with the job store. jobs={} planned={} revision={}",
            self.jobs.len(),
            self.plan.len(),
            msg.revision
        );
        if !self.catchup_done {
            self.catchup_done = true;
            self.catchup_from = Some(now);
            self.load_catchup(0, ctx);
        }
        self.rearm(ctx);
    }
}

impl Handler<JobUpserted> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: JobUpserted, ctx: &mut Self::Context) {
        log::debug!("Job changed. job={} version={} revision={}", msg.job.name, msg.job.version, msg.revision);
        self.upsert_job(msg.job, Utc::now());
        self.revision = msg.revision;
        self.rearm(ctx);
    }
}

impl Handler<JobRemoved> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: JobRemoved, ctx: &mut Self::Context) {
        log::debug!("Job removed. job={} revision={}", msg.name, msg.revision);
        self.jobs.remove(&msg.name);
        self.plan.remove(&msg.name);
        // Ticks waiting for a claim go with the job (a claim in flight finds it gone).
        self.queues.remove(&msg.name);
        self.revision = msg.revision;
        self.rearm(ctx);
    }
}

impl Handler<KillRequested> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: KillRequested, _: &mut Self::Context) {
        let targets: Vec<RunId> = self
            .running
            .iter()
            .filter(|(id, r)| r.job == msg.job && msg.run.as_ref().is_none_or(|want| want == *id))
            .map(|(id, _)| id.clone())
            .collect();
        for run in targets {
            log::info!("Killing run on request. job={} run={run}", msg.job);
            self.peers.kill.do_send(KillRun { run, reason: KillReason::Requested });
        }
    }
}

impl Handler<RunRequested> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: RunRequested, ctx: &mut Self::Context) {
        if self.draining {
            return;
        }
        // A retry waits until it is due on every worker; the first to claim it runs it. A worker
        // whose labels do not match the job's selector waits its failover rank on top, so a
        // matching worker wins (README "Worker labels").
        let due = msg.retry.as_ref().and_then(|r| (r.due_at - Utc::now()).to_std().ok()).unwrap_or_default();
        let placement = self.placement(&msg.job);
        let behind = if placement.eligible {
            Duration::ZERO
        } else {
            self.settings.failover_grace.saturating_mul(u32::try_from(placement.rank).unwrap_or(u32::MAX))
        };
        let wait = due + behind;
        if wait.is_zero() {
            self.claim_run_request(msg, ctx);
        } else {
            ctx.run_later(wait, move |act, ctx| act.claim_run_request(msg, ctx));
        }
    }
}

impl SchedulerActor {
    /// Claims a run-now request (or a due retry attempt) and dispatches it when won.
    fn claim_run_request(&mut self, msg: RunRequested, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        if msg.retry.is_some() && !self.jobs.contains_key(&msg.job) {
            log::debug!("Retry of a job deleted meanwhile; dropped. job={}", msg.job);
            return;
        }
        let claims = self.peers.claims.clone();
        let policy = self.jobs.get(&msg.job).map(|j| j.concurrency).unwrap_or_default();
        let job = msg.job.clone();
        let request = msg.request.clone();
        let (metrics, store) = (self.peers.metrics.clone(), self.peers.claims_kind);
        let retry = msg.retry.clone();
        let fut = async move {
            let asked = std::time::Instant::now();
            let fence = match &retry {
                Some(r) if r.backfill => claims.claim_request(&job, &r.request_id(&job)).await,
                Some(r) => claims.claim_attempt(&job, r.scheduled_at, r.attempt).await,
                None => claims.claim_request(&job, &request).await,
            };
            metrics.claim(store, asked.elapsed(), usize::from(fence.is_err()));
            let fence = fence?;
            // The claim is won from here on: no other worker will take this request, so a
            // failure to list the live runs must end in a record, never in silence (nemesis
            // finding: a run-now accepted during an etcd member outage was neither run nor
            // recorded).
            let live = match (fence, policy) {
                (Some(_), ConcurrencyPolicy::Forbid | ConcurrencyPolicy::Replace) => {
                    list_running_after_claim(claims.as_ref(), &job).await
                }
                _ => Ok(Vec::new()),
            };
            Ok::<_, crate::backend::BackendError>((fence, live))
        };
        let RunRequested { job, env, retry, request, .. } = msg;
        let backfill = BackfillRequest::parse(&request);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok((Some(fence), _)) if act.ineligible_reason(&job).is_some() => {
                let (tick, trigger, attempt) = match (&retry, &backfill) {
                    (Some(r), _) => (r.scheduled_at, Trigger::Retry, r.attempt),
                    (None, Some(_)) => (Utc::now(), Trigger::Backfill, 1),
                    (None, None) => (Utc::now(), Trigger::Manual, 1),
                };
                let reason = act.ineligible_reason(&job).unwrap_or_default();
                act.record_no_eligible(
                    &job,
                    tick,
                    fence,
                    trigger,
                    &RunExtra { attempt, params: env },
                    reason,
                    None,
                    ctx,
                );
            }
            Ok((Some(fence), _)) if backfill.is_some() => {
                if let Some(request) = &backfill {
                    act.start_backfill(job, request, fence, ctx);
                }
            }
            Ok((Some(fence), Ok(live))) => {
                let (tick, trigger, attempt) = match &retry {
                    Some(r) => (r.scheduled_at, r.trigger(), r.attempt),
                    None => (Utc::now(), Trigger::Manual, 1),
                };
                act.dispatch(job, tick, fence, trigger, live, None, RunExtra { attempt, params: env }, ctx);
            }
            Ok((Some(fence), Err(e))) => {
                let (tick, trigger, attempt) = match &retry {
                    Some(r) => (r.scheduled_at, r.trigger(), r.attempt),
                    None => (Utc::now(), Trigger::Manual, 1),
                };
                log::warn!(
                    "Claimed a run request but cannot see the job's live runs; recorded skipped. job={job} trigger={trigger:?} error={e}"
                );
                act.record_unchecked_request(&job, tick, fence, trigger, &RunExtra { attempt, params: env });
            }
            Ok((None, _)) => log::debug!("Run-now request claimed by another worker. job={job}"),
            Err(e) => log::warn!("Cannot claim a run-now request; it will not run. job={job} error={e}"),
        }));
    }

    /// Schedules the next attempt of a run that ended (job `retry`), or records it superseded.
    fn after_attempt(&mut self, live: LiveRun, status: RunStatus, ctx: &mut Context<Self>) {
        let Some(def) = self.jobs.get(&live.job).cloned() else { return };
        let next =
            retry::next_attempt(&def, status, live.attempt, live.scheduled_at, Utc::now(), self.settings.default_tz)
                .in_chain(live.trigger);
        if next == retry::NextAttempt::None {
            return;
        }
        let fut = super::retry::follow_up(
            next,
            def,
            live.params,
            self.worker().clone(),
            self.peers.jobs.clone(),
            self.peers.log.clone(),
        );
        ctx.spawn(fut.into_actor(self));
    }
}

impl Handler<RunFinished> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: RunFinished, ctx: &mut Self::Context) {
        if let Some(live) = self.running.remove(&msg.run) {
            self.queue_mark(MarkOp::Clear(msg.job.clone(), msg.run.clone()), ctx);
            self.after_attempt(live, msg.status, ctx);
        }
        log::debug!("Run finished. job={} run={} status={}", msg.job, msg.run, msg.status);
        if let Some(job) = self.backfill_runs.remove(&msg.run) {
            self.next_backfill(job, ctx);
        }
        self.check_drained();
    }
}

impl Handler<RunAdopted> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: RunAdopted, ctx: &mut Self::Context) {
        // Live like a run of ours (forbid, the running mark) until its RunFinished.
        let live = LiveRun {
            job: msg.job,
            scheduled_at: msg.scheduled_at,
            since: msg.since,
            fence: msg.fence,
            trigger: msg.trigger,
            attempt: 1,
            params: BTreeMap::new(),
        };
        let mark = live.mark(msg.run.clone(), self.worker().clone());
        self.running.insert(msg.run, live);
        self.queue_mark(MarkOp::Put(mark), ctx);
    }
}

impl Handler<WatchLost> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, _: WatchLost, _: &mut Self::Context) {
        self.synced = false;
    }
}

impl Handler<GetSchedulerStatus> for SchedulerActor {
    type Result = MessageResult<GetSchedulerStatus>;

    fn handle(&mut self, _: GetSchedulerStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(SchedulerStatus {
            planned_jobs: self.plan.len(),
            running: self.running.len(),
            revision: self.revision.0,
            synced: self.synced,
            next_fire_at: self.plan.peek(),
            draining: self.draining,
            due_ticks: self.queues.values().map(|q| q.items.len()).sum(),
        })
    }
}

impl Handler<Shutdown> for SchedulerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        log::info!(
            "Shutting down: claiming stopped; waiting for running jobs. running={} grace_secs={}",
            self.running.len(),
            msg.grace.as_secs()
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.drained.push(tx);
        self.check_drained();
        ctx.run_later(msg.grace, |act, _| {
            if !act.running.is_empty() {
                log::warn!("Shutdown grace ran out; killing running jobs. running={}", act.running.len());
            }
            for run in act.running.keys() {
                act.peers.kill.do_send(KillRun { run: run.clone(), reason: KillReason::Shutdown });
            }
        });
        let hard_limit = msg.grace + self.settings.kill_grace + Duration::from_secs(5);
        Box::pin(
            async move {
                let _ = tokio::time::timeout(hard_limit, rx).await;
            }
            .into_actor(self),
        )
    }
}

/// Lists `job`'s live runs after a won request claim, retrying briefly (a store failing over
/// answers again within a second or two) before the caller gives up and records the request.
async fn list_running_after_claim(claims: &dyn Claims, job: &JobName) -> Result<Vec<RunningMark>, BackendError> {
    let mut backoff = crate::domain::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let mut retries_left = 4;
    loop {
        match claims.running(Some(job)).await {
            Ok(live) => return Ok(live),
            Err(e) if retries_left == 0 => return Err(e),
            Err(_) => retries_left -= 1,
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests;
