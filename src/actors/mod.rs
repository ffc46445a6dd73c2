//! The engine: WatchActor, SchedulerActor, the supervised ExecutorActor pool and LogBatchActor.
//!
//! ```text
//!  store watch ──> WatchActor ──Resynced/JobUpserted/JobRemoved/KillRequested/RunRequested──> SchedulerActor
//!                                                                    │ due (job, tick): claim, policy
//!                                                                    ▼ StartRun / KillRun
//!      LogBatchActor <──RecordRun── ExecutorPool ──Execute──> ExecutorActor (supervised) ──RunFinished──> SchedulerActor
//!           │ batch by size/time, spool while the store fails
//!           ▼
//!       log store
//! ```
//! Beside them, the LostRunsActor ([`reaper`]) records the runs of vanished workers as `lost`,
//! and the AlertActor ([`alerts`]) raises and delivers alerts from the run log.
//! [`start`] wires a worker's actors, [`start_master`] a master's, in one place each, passing
//! addresses explicitly.

pub mod alerts;
pub mod essential;
pub mod executor;
pub mod launch;
pub mod live;
pub mod log_batch;
pub mod messages;
pub mod orphans;
pub mod plan;
pub mod process;
pub mod procfs;
pub mod rank;
pub mod reaper;
pub(crate) mod retry;
pub mod scheduler;
pub(crate) mod spool;
pub mod subreaper;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::backend::Backends;
use crate::config::{Config, RestartPolicy};
use crate::domain::WorkerInfo;
use crate::error::StartupError;
use crate::metrics::Metrics;
use essential::Essentials;
use executor::ExecutorPool;
use log_batch::{LogBatchActor, LogBatchSettings};
use messages::{AdoptedKillable, RecordRun, RunAdopted, RunLaunch};
use reaper::LostRunsActor;
use scheduler::{SchedulerActor, SchedulerPeers, SchedulerSettings};
use watch::{WatchActor, WatchTargets};

/// Addresses of the running engine, for shutdown and status queries.
#[derive(Clone)]
pub struct Handles {
    /// Scheduler.
    pub scheduler: Addr<SchedulerActor>,
    /// Executor pool.
    pub pool: Addr<ExecutorPool>,
    /// Log batching.
    pub log: Addr<LogBatchActor>,
    /// Job watcher.
    pub watch: Addr<WatchActor>,
    /// Recorder of runs lost with their worker.
    pub reaper: Addr<LostRunsActor>,
    /// The essential actors above, for readiness.
    pub essentials: Essentials,
    /// Alert evaluation and delivery, when channels are configured.
    pub alerts: Option<Addr<alerts::AlertActor>>,
    /// Live output of this node's runs (`GET /api/v1/runs/{id}/output`).
    pub live: live::LiveOutputs,
}

/// Addresses of what a master runs besides HTTP: the recorder of lost runs and its log pipeline.
#[derive(Clone)]
pub struct MasterHandles {
    /// Log batching.
    pub log: Addr<LogBatchActor>,
    /// Recorder of runs lost with their worker.
    pub reaper: Addr<LostRunsActor>,
    /// The essential actors above, for readiness.
    pub essentials: Essentials,
}

fn log_settings(config: &Config) -> LogBatchSettings {
    LogBatchSettings {
        max_records: config.log_batch.max_records as usize,
        flush: Duration::from_millis(config.log_batch.flush_ms),
        retry_initial: Duration::from_millis(config.log_batch.retry_initial_ms),
        retry_max: Duration::from_millis(config.log_batch.retry_max_ms),
        retention_days: config.log_batch.retention_days,
        max_buffered_bytes: usize::try_from(config.log_batch.max_buffered_bytes).unwrap_or(usize::MAX),
        max_batch_bytes: usize::try_from(config.log_batch.max_batch_bytes).unwrap_or(usize::MAX),
    }
}

/// Opens the spool (cutting a torn last line, counting a possibly large file) and its
/// dead-letter file on a blocking thread, then hands them to the spool's own thread.
async fn open_spool(config: &Config) -> Result<spool::SpoolHandle, StartupError> {
    let dir = config.data_dir.join("spool");
    let spool_path = dir.join("runs.jsonl");
    let dead_path = dir.join("dead-letter.jsonl");
    let max_bytes = config.log_batch.spool_max_bytes;
    let shown = spool_path.display().to_string();
    let opened = tokio::task::spawn_blocking(move || {
        let dead = spool::DeadLetter::open(&dead_path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("dead-letter file {}: {e}", dead_path.display())))?;
        let spool = spool::Spool::open(&spool_path, max_bytes)?.with_dead_letter(dead);
        spool::SpoolHandle::start(spool)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    opened.map_err(|source| StartupError::Io { context: format!("cannot open the log spool {shown}"), source })
}

/// Starts what a master runs on the current actix system: a log pipeline (spooled like a
/// worker's) and the recorder of runs lost with their worker (ARCHITECTURE.md: "when a
/// worker's lease expires the master records each of its runs as lost").
///
/// # Errors
/// When the spool file under `data_dir` cannot be opened.
pub async fn start_master(
    config: &Config,
    backends: &Backends,
    metrics: &Metrics,
) -> Result<MasterHandles, StartupError> {
    let spool = open_spool(config).await?;
    let log =
        LogBatchActor::new(backends.logs.clone(), spool, log_settings(config)).with_metrics(metrics.clone()).start();
    let reaper = LostRunsActor::new(
        backends.claims.clone(),
        backends.logs.clone(),
        backends.jobs.clone(),
        log.clone().recipient(),
        None,
    )
    .with_metrics(metrics.clone(), backends.kinds.claims)
    .with_default_tz(config.default_zone())
    .start();
    let mut essentials = Essentials::default();
    essentials.add("log_batch", &log);
    essentials.add("lost_runs", &reaper);
    Ok(MasterHandles { log, reaper, essentials })
}

/// Starts the worker engine on the current actix system. Order matters: the log pipeline first
/// (so every later record has somewhere to go, and runs interrupted by a crash are recorded
/// `lost` before anything new runs), then the executors, then the scheduler, and the watcher
/// last (its first snapshot starts the scheduling).
///
/// # Errors
/// When the spool file under `data_dir` cannot be opened.
pub async fn start(
    config: &Config,
    backends: &Backends,
    worker: WorkerInfo,
    started_at: DateTime<Utc>,
    metrics: &Metrics,
) -> Result<Handles, StartupError> {
    // 0. Processes a run leaves behind are re-parented to this node and reaped here.
    subreaper::become_subreaper();
    actix::spawn(subreaper::reap_forever());

    // 1. Log pipeline, and runs a previous process left `running`.
    let spool = open_spool(config).await?;
    let lost = match tokio::time::timeout(
        Duration::from_secs(10),
        log_batch::interrupted_runs(backends.logs.as_ref(), &spool, &worker.id, started_at),
    )
    .await
    {
        Ok((lost, None)) => lost,
        Ok((lost, Some(e))) => {
            log::warn!("Cannot look in the log store for runs interrupted by the last stop; those stay `running` until checked again. error={e}");
            lost
        }
        Err(_) => {
            log::warn!("Log store did not answer the interrupted-runs query in 10s; skipped.");
            Vec::new()
        }
    };
    let log = LogBatchActor::new(backends.logs.clone(), spool, log_settings(config))
        .with_jobs(Arc::clone(&backends.jobs))
        .with_metrics(metrics.clone())
        .start();
    // Their processes, if any still live: terminated (or adopted) before anything new runs,
    // so a `forbid` job never has two copies alive.
    let kill_grace = Duration::from_millis(config.executor.kill_grace_ms);
    let settled = orphans::settle(lost, config.executor.on_restart, kill_grace).await;
    if !settled.lost.is_empty() {
        log::warn!("Runs interrupted by the last stop recorded as lost. runs={}", settled.lost.len());
    }
    for record in settled.lost {
        log.do_send(RecordRun(record));
    }

    // 2. Executors and scheduler know each other: create the scheduler's context first.
    let sched_ctx = Context::<SchedulerActor>::new();
    let scheduler_addr = sched_ctx.address();
    let live = live::LiveOutputs::default();
    let pool = ExecutorPool::start_live(
        config.executor.pool_size as usize,
        config.executor.queue_capacity as usize,
        worker.id.clone(),
        scheduler_addr.clone().recipient(),
        log.clone().recipient(),
        live.clone(),
    );
    let worker_id = worker.id.clone();
    let worker_id_for_alerts = worker.id.clone();
    let settings = SchedulerSettings {
        worker,
        default_tz: config.default_zone(),
        misfire_grace: Duration::from_millis(config.scheduler.misfire_grace_ms),
        heartbeat: Duration::from_secs(config.scheduler.heartbeat_secs),
        shell: config.executor.shell.clone(),
        kill_grace: Duration::from_millis(config.executor.kill_grace_ms),
        max_output_bytes: usize::try_from(config.executor.max_output_bytes).unwrap_or(usize::MAX),
        failover_grace: Duration::from_millis(config.scheduler.failover_grace_ms),
        on_session_loss: config.scheduler.on_session_loss,
        launch: RunLaunch {
            allowed_users: config.executor.allowed_users.clone(),
            // Adopting needs the shell to outlive distcron.
            death_signal: config.executor.death_signal && config.executor.on_restart == RestartPolicy::Terminate,
            ..RunLaunch::default()
        },
    };
    let peers = SchedulerPeers {
        claims: backends.claims.clone(),
        members: backends.members.clone(),
        jobs: backends.jobs.clone(),
        start: pool.clone().recipient(),
        kill: pool.clone().recipient(),
        log: log.clone().recipient(),
        metrics: metrics.clone(),
        claims_kind: backends.kinds.claims,
    };
    let scheduler = sched_ctx.run(SchedulerActor::new(settings, peers));
    // Adopted runs are live before the first tick is planned (the watcher starts below).
    for record in settled.adopted {
        scheduler.do_send(RunAdopted {
            run: record.id.clone(),
            job: record.job.clone(),
            scheduled_at: record.scheduled_at,
            since: record.started_at.unwrap_or(record.dispatched_at),
            fence: record.fence,
            trigger: record.trigger,
        });
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
        pool.do_send(AdoptedKillable { run: record.id.clone(), kill: kill_tx });
        let (log, scheduler) = (log.clone().recipient(), scheduler.clone().recipient());
        actix::spawn(orphans::watch_adopted(record, kill_rx, kill_grace, log, scheduler));
    }

    // 3. The watcher feeds the scheduler; its first snapshot plans every job.
    let targets = WatchTargets {
        resynced: scheduler.clone().recipient(),
        upserted: scheduler.clone().recipient(),
        removed: scheduler.clone().recipient(),
        kill: scheduler.clone().recipient(),
        run: scheduler.clone().recipient(),
        lost: scheduler.clone().recipient(),
    };
    let watch = WatchActor::new(Arc::clone(&backends.jobs), targets).start();

    // 4. Runs of other workers that vanish are recorded here too (exactly once cluster-wide).
    let reaper = LostRunsActor::new(
        backends.claims.clone(),
        backends.logs.clone(),
        backends.jobs.clone(),
        log.clone().recipient(),
        Some(worker_id),
    )
    .with_metrics(metrics.clone(), backends.kinds.claims)
    .with_default_tz(config.default_zone())
    .start();
    // 5. Alerts, read from the run log beside the scheduling path (README "Alerts").
    let channels = crate::alerting::Channels::from_config(&config.alerts, &config.executor.shell)?;
    let alerts = (!channels.is_empty()).then(|| {
        let peers = alerts::AlertPeers {
            claims: backends.claims.clone(),
            logs: backends.logs.clone(),
            jobs: backends.jobs.clone(),
            members: backends.members.clone(),
        };
        let settings = alerts::AlertSettings::from_config(&config.alerts);
        alerts::AlertActor::new(settings, peers, Arc::new(channels), worker_id_for_alerts).start()
    });
    // 5. The membership session's state, for `distcron_session_up`.
    actix::spawn(follow_session(backends.members.session_events(), metrics.clone()));
    let mut essentials = Essentials::default();
    essentials.add("scheduler", &scheduler);
    essentials.add("watch", &watch);
    essentials.add("log_batch", &log);
    essentials.add("lost_runs", &reaper);
    Ok(Handles { scheduler, pool, log, watch, reaper, essentials, alerts, live })
}

/// Mirrors this worker's membership session into the metrics until the stream ends.
async fn follow_session(
    mut events: futures::stream::BoxStream<'static, crate::backend::SessionEvent>,
    metrics: Metrics,
) {
    use futures::StreamExt;
    while let Some(event) = events.next().await {
        metrics.set_session_up(matches!(event, crate::backend::SessionEvent::Renewed));
    }
}
