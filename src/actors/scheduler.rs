//! SchedulerActor: owns the plan and the table of runs this node dispatched; turns due ticks
//! into claimed, policy-checked runs for the executor pool.
//!
//! One timer is armed for the earliest planned tick (no polling, no scan of every job): a
//! wake-up pops only the due ticks from the [`Plan`] heap. For each tick the actor takes the
//! claim through the [`Claims`] port (ARCHITECTURE.md: exactly once per (job, tick)), then
//! applies the job's concurrency policy against live runs anywhere, then dispatches. Job
//! changes arrive only through the WatchActor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::messages::{
    GetSchedulerStatus, JobRemoved, JobUpserted, KillReason, KillRequested, KillRun, RecordRun, Resynced, RunFinished,
    RunRequested, RunSpec, SchedulerStatus, Shutdown, StartRun, WatchLost,
};
use super::plan::{Due, Missed, Plan};
use crate::backend::{Claims, JobStore, Membership, RunningMark, Signal};
use crate::domain::{
    ConcurrencyPolicy, Fence, Job, JobName, Revision, RunId, RunRecord, RunStatus, Trigger, WorkerId, WorkerInfo,
};

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
}

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
}

#[derive(Debug, Clone)]
struct LiveRun {
    job: JobName,
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
        }
    }

    fn worker(&self) -> &WorkerId {
        &self.settings.worker.id
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
                        if self.plan.upsert(name.clone(), schedule, tz, now).is_none() {
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
        if self.draining {
            return;
        }
        let now = Utc::now();
        let grace = chrono::Duration::from_std(self.settings.misfire_grace).unwrap_or(chrono::Duration::MAX);
        for Due { job, tick, missed } in self.plan.pop_due(now, grace) {
            if let Some(m) = missed {
                self.record_missed(&job, &m);
            }
            if let Some(tick) = tick {
                self.claim_tick(job, tick, ctx);
            }
        }
        self.rearm(ctx);
    }

    fn record_missed(&self, job: &JobName, m: &Missed) {
        let Some(def) = self.jobs.get(job) else { return };
        let err = format!(
            "missed {}{} tick(s) from {} to {}: the scheduler reached them later than misfire_grace_ms",
            m.count,
            if m.more { "+" } else { "" },
            m.first.to_rfc3339(),
            m.last.to_rfc3339()
        );
        log::warn!("Ticks missed. job={job} count={} first={} last={}", m.count, m.first, m.last);
        let record = RunRecord::not_run(
            job.clone(),
            def.command.clone(),
            RunStatus::Missed,
            Trigger::Schedule,
            m.first,
            self.worker().clone(),
            Fence(0),
            err,
        );
        self.peers.log.do_send(RecordRun(record));
    }

    fn claim_tick(&mut self, job: JobName, tick: DateTime<Utc>, ctx: &mut Context<Self>) {
        let claims = self.peers.claims.clone();
        let policy = self.jobs.get(&job).map(|j| j.concurrency).unwrap_or_default();
        let name = job.clone();
        let fut = async move {
            let fence = claims.claim_tick(&name, tick).await?;
            // Only the winner looks at live runs; `allow` needs no look.
            let live = match (fence, policy) {
                (Some(_), ConcurrencyPolicy::Forbid | ConcurrencyPolicy::Replace) => claims.running(Some(&name)).await?,
                _ => Vec::new(),
            };
            Ok::<_, crate::backend::BackendError>((fence, live))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok((Some(fence), live)) => {
                act.claim_recovered();
                act.dispatch(job, tick, fence, Trigger::Schedule, live, ctx);
            }
            Ok((None, _)) => {
                act.claim_recovered();
                log::debug!("Tick claimed by another worker. job={job} tick={tick}");
            }
            Err(e) => act.claim_failed(&job, tick, &e),
        }));
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

    /// Applies the concurrency policy to a claimed tick and hands it to the pool.
    fn dispatch(
        &mut self,
        job: JobName,
        tick: DateTime<Utc>,
        fence: Fence,
        trigger: Trigger,
        live_anywhere: Vec<RunningMark>,
        _ctx: &mut Context<Self>,
    ) {
        let Some(def) = self.jobs.get(&job).cloned() else {
            log::debug!("Claimed tick of a job deleted meanwhile; dropped. job={job}");
            return;
        };
        if self.draining {
            let record = RunRecord::not_run(
                job, def.command, RunStatus::Missed, trigger, tick, self.worker().clone(), fence,
                "missed: the node was shutting down when the tick was claimed".into(),
            );
            self.peers.log.do_send(RecordRun(record));
            return;
        }
        // Live runs: ours (authoritative, includes queued ones) and marks from other workers.
        let mut live: Vec<(RunId, Option<WorkerId>)> =
            self.running.iter().filter(|(_, r)| r.job == job).map(|(id, _)| (id.clone(), None)).collect();
        for mark in live_anywhere {
            if mark.worker != *self.worker() && !live.iter().any(|(id, _)| *id == mark.run) {
                live.push((mark.run, Some(mark.worker)));
            }
        }
        match def.concurrency {
            ConcurrencyPolicy::Forbid if !live.is_empty() => {
                let (run, worker) = &live[0];
                let where_ = worker.as_ref().map_or_else(|| "on this worker".to_owned(), |w| format!("on worker {w}"));
                let record = RunRecord::not_run(
                    job.clone(), def.command.clone(), RunStatus::Skipped, trigger, tick, self.worker().clone(), fence,
                    format!("skipped: concurrency policy forbid and run {run} of this job is still running {where_}"),
                );
                log::info!("Tick skipped: previous run still alive (policy forbid). job={job} tick={tick} alive_run={run}");
                self.peers.log.do_send(RecordRun(record));
                return;
            }
            ConcurrencyPolicy::Replace => {
                for (run, worker) in live {
                    log::info!("Replacing a live run (policy replace). job={job} run={run}");
                    match worker {
                        None => {
                            self.peers.kill.do_send(KillRun { run, reason: KillReason::Replaced });
                        }
                        Some(_) => {
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
            }
            _ => {}
        }
        let run = RunId::generate();
        let now = Utc::now();
        let spec = RunSpec {
            run: run.clone(),
            job: job.clone(),
            command: def.command.clone(),
            shell: self.settings.shell.clone(),
            env: def.env.clone(),
            working_dir: def.working_dir.clone(),
            timeout: (def.timeout_secs > 0).then(|| Duration::from_secs(def.timeout_secs)),
            kill_grace: self.settings.kill_grace,
            max_output_bytes: self.settings.max_output_bytes,
            scheduled_at: tick,
            dispatched_at: now,
            trigger,
            attempt: 1,
            fence,
        };
        self.running.insert(run.clone(), LiveRun { job: job.clone() });
        let mark = RunningMark { job: job.clone(), run: run.clone(), worker: self.worker().clone(), scheduled_at: tick, since: now };
        let claims = self.peers.claims.clone();
        actix::spawn(async move {
            if let Err(e) = claims.mark_running(&mark).await {
                log::warn!("Cannot publish the running mark; other workers may not see this run. job={} run={} error={e}", mark.job, mark.run);
            }
        });
        log::debug!("Dispatching run. job={job} run={run} tick={tick} trigger={trigger:?}");
        // do_send ignores mailbox bounds: the pool's own queue is the bound that records overflow.
        self.peers.start.do_send(StartRun(spec));
    }

    fn heartbeat(&self, ctx: &mut Context<Self>) {
        let mut info = self.settings.worker.clone();
        info.running = u32::try_from(self.running.len()).unwrap_or(u32::MAX);
        info.last_heartbeat = Utc::now();
        let members = self.peers.members.clone();
        ctx.spawn(
            async move { members.heartbeat(&info).await }
                .into_actor(self)
                .map(|res, _, _| {
                    if let Err(e) = res {
                        log::warn!("Membership heartbeat failed. error={e}");
                    }
                }),
        );
    }

    fn check_drained(&mut self) {
        if self.draining && self.running.is_empty() {
            for tx in self.drained.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let info = self.settings.worker.clone();
        let members = self.peers.members.clone();
        ctx.spawn(async move { members.join(&info).await }.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                log::warn!("Cannot join membership; will retry with heartbeats. error={e}");
            }
        }));
        ctx.run_interval(self.settings.heartbeat, |act, ctx| act.heartbeat(ctx));
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
        }
        for job in msg.jobs {
            self.upsert_job(job, now);
        }
        self.revision = msg.revision;
        self.synced = true;
        log::info!("Plan synced with the job store. jobs={} planned={} revision={}", self.jobs.len(), self.plan.len(), msg.revision);
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
        let claims = self.peers.claims.clone();
        let policy = self.jobs.get(&msg.job).map(|j| j.concurrency).unwrap_or_default();
        let job = msg.job.clone();
        let request = msg.request.clone();
        let fut = async move {
            let fence = claims.claim_request(&job, &request).await?;
            let live = match (fence, policy) {
                (Some(_), ConcurrencyPolicy::Forbid | ConcurrencyPolicy::Replace) => claims.running(Some(&job)).await?,
                _ => Vec::new(),
            };
            Ok::<_, crate::backend::BackendError>((fence, live))
        };
        let job = msg.job;
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok((Some(fence), live)) => act.dispatch(job, Utc::now(), fence, Trigger::Manual, live, ctx),
            Ok((None, _)) => log::debug!("Run-now request claimed by another worker. job={job}"),
            Err(e) => log::warn!("Cannot claim a run-now request; it will not run. job={job} error={e}"),
        }));
    }
}

impl Handler<RunFinished> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: RunFinished, _: &mut Self::Context) {
        if self.running.remove(&msg.run).is_some() {
            let claims = self.peers.claims.clone();
            let (job, run) = (msg.job.clone(), msg.run.clone());
            actix::spawn(async move {
                if let Err(e) = claims.clear_running(&job, &run).await {
                    log::warn!("Cannot clear a running mark; forbid may skip the next tick. job={job} run={run} error={e}");
                }
            });
        }
        log::debug!("Run finished. job={} run={} status={}", msg.job, msg.run, msg.status);
        self.check_drained();
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
        log::info!("Shutting down: claiming stopped; waiting for running jobs. running={} grace_secs={}", self.running.len(), msg.grace.as_secs());
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
