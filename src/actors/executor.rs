//! The executor pool: a fixed number of supervised [`ExecutorActor`]s behind an [`ExecutorPool`]
//! that hands out runs, queues them (bounded) and routes kills.
//!
//! Owns: turning a dispatched [`RunSpec`] into a running process (through a [`Runner`], by
//! default [`process_runner`] over [`run_command`]), the run's `running` and final
//! [`RunRecord`]s, the [`RunFinished`] event, and the pool's queue and saturation rule.
//! Leaves to others: claims, concurrency policy and what to do after a run (SchedulerActor),
//! writing records (LogBatchActor), process details (`process.rs`).
//!
//! Message flow:
//! - SchedulerActor -> pool [`StartRun`]: an idle executor gets [`Execute`]; else the run waits in
//!   a FIFO of `queue_capacity`; when that is full the run is recorded `skipped`
//!   ("saturated: ...") and [`RunFinished`] is sent at once — a run is never dropped silently.
//! - Executor: process spawned -> [`RecordRun`] `running` (same [`RunId`], with the process
//!   group and its start time, so a restarted node can find what it left) -> [`RecordRun`] final ->
//!   [`RunFinished`] to the scheduler -> [`ExecutorIdle`] to the pool, which starts the next
//!   queued run on it.
//! - [`KillRun`] to the pool: a queued run is removed and recorded `killed` (+ [`RunFinished`]);
//!   a running one is forwarded to its executor, which sends the reason down the run's oneshot
//!   (SIGTERM to the group, SIGKILL after the grace); an unknown run id is ignored.
//!
//! Crash boundary (CONVENTIONS.md 7, actix#204: a handler panic is not caught by a Supervisor):
//! each run's future runs in its own task; a panic there ends the run as `error`
//! ("executor crashed: <panic>"), then the executor stops itself so its Supervisor restarts it,
//! and `restarting()` tells the pool with [`ExecutorRestarted`] (idle again, restart counted).

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::task::JoinError;

use crate::actors::live::LiveOutputs;
use crate::actors::messages::{
    AdoptedKillable, Execute, ExecutorIdle, ExecutorRestarted, GetPoolStatus, KillReason, KillRun, PoolStatus,
    RecordRun, RunFinished, RunSpec, StartRun,
};
use crate::actors::process::{classify, run_command_reporting, ProcessOutcome, ProcessSpec, Spawned};
use crate::domain::{RunId, RunRecord, RunStatus, WorkerId};

/// Runs one dispatched run to its outcome; a kill reason arrives on the receiver (a dropped
/// sender never kills); [`Spawned`] goes out on the sender once the process runs. Injected so
/// tests can run fakes; [`process_runner`] is the real one.
pub type Runner = Arc<
    dyn Fn(RunSpec, oneshot::Receiver<KillReason>, oneshot::Sender<Spawned>) -> BoxFuture<'static, ProcessOutcome>
        + Send
        + Sync,
>;

/// The real runner, capturing each run's output into `live` so it can be followed while it
/// runs (`live.rs`).
pub fn live_runner(live: LiveOutputs) -> Runner {
    Arc::new(move |spec: RunSpec, kill: oneshot::Receiver<KillReason>, spawned: oneshot::Sender<Spawned>| {
        let mut process = ProcessSpec::from_run(&spec);
        process.live = Some(live.begin(&spec.run, spec.max_output_bytes));
        Box::pin(async move { run_command_reporting(&process, kill, Some(spawned)).await })
    })
}

/// The real runner: `<shell> -c <command>` through [`run_command_reporting`].
pub fn process_runner() -> Runner {
    Arc::new(|spec: RunSpec, kill: oneshot::Receiver<KillReason>, spawned: oneshot::Sender<Spawned>| {
        Box::pin(async move { run_command_reporting(&ProcessSpec::from_run(&spec), kill, Some(spawned)).await })
    })
}

/// Where the pool's records and events go.
#[derive(Clone)]
struct Sinks {
    worker: WorkerId,
    scheduler: Recipient<RunFinished>,
    log: Recipient<RecordRun>,
    /// Live outputs of this node's runs: told each run's end.
    live: LiveOutputs,
}

impl Sinks {
    /// Records a run that never started (skipped or killed in the queue) and reports it finished.
    fn not_run(&self, spec: &RunSpec, status: RunStatus, err: String) {
        let mut record = RunRecord::not_run(
            spec.job.clone(),
            spec.command.clone(),
            status,
            spec.trigger,
            spec.scheduled_at,
            self.worker.clone(),
            spec.fence,
            err,
        );
        // Same id as the run the scheduler tracks, so its record and RunFinished match.
        record.id = spec.run.clone();
        record.attempt = spec.attempt;
        record.job_version = spec.job_version;
        record.dispatched_at = spec.dispatched_at;
        self.finish(record);
    }

    /// Sends the final record, then tells the scheduler.
    fn finish(&self, record: RunRecord) {
        let finished = RunFinished { run: record.id.clone(), job: record.job.clone(), status: record.status };
        self.live.end(&record);
        self.log.do_send(RecordRun(record));
        self.scheduler.do_send(finished);
    }
}

/// A record for `spec` with everything but the outcome filled in.
fn base_record(spec: &RunSpec, worker: &WorkerId, status: RunStatus, started_at: DateTime<Utc>) -> RunRecord {
    RunRecord {
        id: spec.run.clone(),
        job: spec.job.clone(),
        command: spec.command.clone(),
        status,
        trigger: spec.trigger,
        scheduled_at: spec.scheduled_at,
        dispatched_at: spec.dispatched_at,
        started_at: Some(started_at),
        ended_at: None,
        duration_ms: None,
        exit_code: None,
        signal: None,
        err: String::new(),
        output: String::new(),
        output_bytes: 0,
        output_truncated: false,
        worker: worker.clone(),
        attempt: spec.attempt,
        fence: spec.fence,
        job_version: spec.job_version,
        pgid: None,
        proc_start_ticks: None,
        fire_at: spec.fire_at,
        params: (!spec.params.is_empty()).then(|| spec.params.clone()),
    }
}

fn duration_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// ExecutorPool

/// One executor as the pool sees it.
struct Slot {
    addr: Addr<ExecutorActor>,
    /// The run it is executing, if any.
    running: Option<RunId>,
}

/// Hands runs to idle executors, queues the rest (bounded), routes kills, counts restarts.
pub struct ExecutorPool {
    sinks: Sinks,
    slots: Vec<Slot>,
    queue: VecDeque<RunSpec>,
    queue_capacity: usize,
    restarts: u64,
    /// Kill channels of runs adopted at start (`executor.on_restart = "adopt"`).
    adopted: std::collections::HashMap<RunId, oneshot::Sender<KillReason>>,
}

impl ExecutorPool {
    /// Starts a pool of `size` (at least 1) supervised executors running real processes, with a
    /// queue of `queue_capacity` runs; records go to `log`, final statuses to `scheduler`.
    pub fn start(
        size: usize,
        queue_capacity: usize,
        worker: WorkerId,
        scheduler: Recipient<RunFinished>,
        log: Recipient<RecordRun>,
    ) -> Addr<ExecutorPool> {
        Self::start_with_runner(size, queue_capacity, worker, scheduler, log, process_runner())
    }

    /// [`ExecutorPool::start`] with a custom [`Runner`] (tests).
    pub fn start_with_runner(
        size: usize,
        queue_capacity: usize,
        worker: WorkerId,
        scheduler: Recipient<RunFinished>,
        log: Recipient<RecordRun>,
        runner: Runner,
    ) -> Addr<ExecutorPool> {
        Self::start_inner(size, queue_capacity, Sinks { worker, scheduler, log, live: LiveOutputs::default() }, runner)
    }

    /// [`ExecutorPool::start`] whose runs can be followed live through `live`.
    pub fn start_live(
        size: usize,
        queue_capacity: usize,
        worker: WorkerId,
        scheduler: Recipient<RunFinished>,
        log: Recipient<RecordRun>,
        live: LiveOutputs,
    ) -> Addr<ExecutorPool> {
        let runner = live_runner(live.clone());
        Self::start_inner(size, queue_capacity, Sinks { worker, scheduler, log, live }, runner)
    }

    fn start_inner(size: usize, queue_capacity: usize, sinks: Sinks, runner: Runner) -> Addr<ExecutorPool> {
        ExecutorPool::create(move |ctx| {
            let pool = ctx.address();
            let slots = (0..size.max(1))
                .map(|index| {
                    let (pool, sinks, runner) = (pool.clone(), sinks.clone(), runner.clone());
                    let addr = Supervisor::start(move |_| ExecutorActor { index, pool, sinks, runner, current: None });
                    Slot { addr, running: None }
                })
                .collect();
            ExecutorPool {
                sinks,
                slots,
                queue: VecDeque::with_capacity(queue_capacity),
                queue_capacity,
                restarts: 0,
                adopted: std::collections::HashMap::new(),
            }
        })
    }

    fn dispatch(&mut self, index: usize, spec: RunSpec) {
        let slot = &mut self.slots[index];
        slot.running = Some(spec.run.clone());
        slot.addr.do_send(Execute(spec));
    }

    /// Executor `index` is free: give it the oldest queued run, if any.
    fn on_idle(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index) else {
            log::error!("Idle report from an unknown executor ignored. index={index}");
            return;
        };
        slot.running = None;
        if let Some(spec) = self.queue.pop_front() {
            self.dispatch(index, spec);
        }
    }
}

impl Actor for ExecutorPool {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        log::info!("Executor pool started. size={} queue_capacity={}", self.slots.len(), self.queue_capacity);
    }
}

impl Handler<StartRun> for ExecutorPool {
    type Result = ();

    fn handle(&mut self, StartRun(spec): StartRun, _ctx: &mut Self::Context) {
        if let Some(index) = self.slots.iter().position(|s| s.running.is_none()) {
            self.dispatch(index, spec);
        } else if self.queue.len() < self.queue_capacity {
            log::debug!(
                "All executors busy, run queued. job={} run={} queued={}",
                spec.job,
                spec.run,
                self.queue.len() + 1
            );
            self.queue.push_back(spec);
        } else {
            let err =
                format!("saturated: all {} executors busy and {} runs queued", self.slots.len(), self.queue.len());
            log::warn!(
                "Executor pool saturated, run skipped. job={} run={} size={} queued={}",
                spec.job,
                spec.run,
                self.slots.len(),
                self.queue.len()
            );
            self.sinks.not_run(&spec, RunStatus::Skipped, err);
        }
    }
}

impl Handler<ExecutorIdle> for ExecutorPool {
    type Result = ();

    fn handle(&mut self, msg: ExecutorIdle, _ctx: &mut Self::Context) {
        self.on_idle(msg.index);
    }
}

impl Handler<ExecutorRestarted> for ExecutorPool {
    type Result = ();

    fn handle(&mut self, msg: ExecutorRestarted, _ctx: &mut Self::Context) {
        self.restarts += 1;
        self.on_idle(msg.index);
    }
}

impl Handler<KillRun> for ExecutorPool {
    type Result = ();

    fn handle(&mut self, msg: KillRun, _ctx: &mut Self::Context) {
        if let Some(pos) = self.queue.iter().position(|s| s.run == msg.run) {
            if let Some(spec) = self.queue.remove(pos) {
                log::info!("Queued run killed before it started. job={} run={}", spec.job, spec.run);
                self.sinks.not_run(&spec, RunStatus::Killed, msg.reason.describe().to_string());
            }
        } else if let Some(slot) = self.slots.iter().find(|s| s.running.as_ref() == Some(&msg.run)) {
            slot.addr.do_send(msg);
        } else if let Some(kill) = self.adopted.remove(&msg.run) {
            log::info!("Killing an adopted run. run={}", msg.run);
            let _ = kill.send(msg.reason);
        } else {
            log::debug!("Kill for a run this pool does not hold ignored. run={}", msg.run);
        }
    }
}

impl Handler<AdoptedKillable> for ExecutorPool {
    type Result = ();

    fn handle(&mut self, msg: AdoptedKillable, _ctx: &mut Self::Context) {
        // A watcher that already ended dropped its receiver: nothing to keep.
        self.adopted.retain(|_, tx| !tx.is_closed());
        self.adopted.insert(msg.run, msg.kill);
    }
}

impl Handler<GetPoolStatus> for ExecutorPool {
    type Result = MessageResult<GetPoolStatus>;

    fn handle(&mut self, _msg: GetPoolStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(PoolStatus {
            size: self.slots.len(),
            busy: self.slots.iter().filter(|s| s.running.is_some()).count(),
            queued: self.queue.len(),
            queue_capacity: self.queue_capacity,
            restarts: self.restarts,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// ExecutorActor

/// The run an executor is executing.
struct Current {
    spec: RunSpec,
    started_at: DateTime<Utc>,
    /// Taken by the first kill.
    kill: Option<oneshot::Sender<KillReason>>,
}

/// Runs one run at a time, in its own task; supervised (restarted after a crashed run).
pub struct ExecutorActor {
    index: usize,
    pool: Addr<ExecutorPool>,
    sinks: Sinks,
    runner: Runner,
    current: Option<Current>,
}

impl Actor for ExecutorActor {
    type Context = Context<Self>;
}

impl Supervised for ExecutorActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        log::warn!("Executor restarted after a crashed run. index={}", self.index);
        self.current = None;
        self.pool.do_send(ExecutorRestarted { index: self.index });
    }
}

impl ExecutorActor {
    /// Sends the `running` record of the current run `run` (unless it already ended).
    fn record_running(&mut self, run: &RunId, spawned: Option<Spawned>) {
        let Some(current) = self.current.as_ref().filter(|c| &c.spec.run == run) else { return };
        let mut record = base_record(&current.spec, &self.sinks.worker, RunStatus::Running, current.started_at);
        if let Some(sp) = spawned {
            record.pgid = Some(sp.pgid);
            record.proc_start_ticks = sp.start_ticks;
        }
        self.sinks.log.do_send(RecordRun(record));
    }

    /// The run's task ended: record it and report; stop (-> restart) when it crashed.
    fn finish(&mut self, result: Result<ProcessOutcome, JoinError>, ctx: &mut Context<Self>) {
        let Some(current) = self.current.take() else {
            log::error!("Run ended on an executor with no current run. index={}", self.index);
            return;
        };
        let spec = &current.spec;
        match result {
            Ok(outcome) => {
                let (status, err) = classify(&outcome);
                let mut record = base_record(spec, &self.sinks.worker, status, outcome.started_at);
                record.ended_at = Some(outcome.ended_at);
                record.duration_ms = Some(duration_ms(outcome.started_at, outcome.ended_at));
                record.exit_code = outcome.exit_code;
                record.signal = outcome.signal;
                record.err = err;
                record.output = outcome.output;
                record.output_bytes = outcome.output_bytes;
                record.output_truncated = outcome.truncated;
                log::info!(
                    "Run finished. job={} run={} status={status} exit_code={:?} duration_ms={}",
                    spec.job,
                    spec.run,
                    record.exit_code,
                    record.duration_ms.unwrap_or(0)
                );
                self.sinks.finish(record);
                self.pool.do_send(ExecutorIdle { index: self.index });
            }
            Err(e) => {
                let why =
                    if e.is_panic() { panic_message(e.into_panic()) } else { "run task was cancelled".to_string() };
                log::error!("Executor crashed while running; run recorded as error, restarting executor. job={} run={} index={} error={why}", spec.job, spec.run, self.index);
                let now = Utc::now();
                let mut record = base_record(spec, &self.sinks.worker, RunStatus::Error, current.started_at);
                record.ended_at = Some(now);
                record.duration_ms = Some(duration_ms(current.started_at, now));
                record.err = format!("executor crashed: {why}");
                self.sinks.finish(record);
                // The Supervisor restarts us; restarting() tells the pool we are idle.
                ctx.stop();
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

impl Handler<Execute> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, Execute(spec): Execute, ctx: &mut Self::Context) {
        if let Some(current) = &self.current {
            // The pool only hands runs to idle executors; never lose one if that ever breaks.
            log::error!(
                "Executor asked to run while busy; run recorded as error. index={} busy_with={} run={}",
                self.index,
                current.spec.run,
                spec.run
            );
            let mut record = base_record(&spec, &self.sinks.worker, RunStatus::Error, Utc::now());
            record.started_at = None;
            record.ended_at = Some(Utc::now());
            record.err = format!("internal error: executor {} was busy", self.index);
            self.sinks.finish(record);
            return;
        }
        let started_at = Utc::now();
        log::debug!("Run starting. job={} run={} index={}", spec.job, spec.run, self.index);
        let (kill_tx, kill_rx) = oneshot::channel();
        let (spawned_tx, spawned_rx) = oneshot::channel();
        let runner = Arc::clone(&self.runner);
        let task_spec = spec.clone();
        // Own task: a panic in the run (even in the runner call itself) becomes a JoinError.
        let handle = actix::spawn(async move { runner(task_spec, kill_rx, spawned_tx).await });
        let run = spec.run.clone();
        self.current = Some(Current { spec, started_at, kill: Some(kill_tx) });
        // The `running` record is written once, when the process runs (a MongoDB `running`
        // record never replaces a stored one), naming its group; a runner that never reports
        // gets a plain one. The final record always follows it through the same mailbox.
        ctx.spawn(spawned_rx.into_actor(self).map(move |spawned, act, _| act.record_running(&run, spawned.ok())));
        ctx.spawn(handle.into_actor(self).map(|result, act, ctx| act.finish(result, ctx)));
    }
}

impl Handler<KillRun> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, msg: KillRun, _ctx: &mut Self::Context) {
        match &mut self.current {
            Some(current) if current.spec.run == msg.run => {
                if let Some(kill) = current.kill.take() {
                    log::info!("Killing run. job={} run={} reason={:?}", current.spec.job, msg.run, msg.reason);
                    // Err only when the run just ended; its outcome is recorded as it is.
                    let _ = kill.send(msg.reason);
                }
            }
            _ => {
                log::debug!("Kill for a run this executor is not running ignored. index={} run={}", self.index, msg.run)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::actors::messages::RunLaunch;
    use crate::actors::process::EndedBy;
    use crate::domain::{Fence, JobName, Trigger};

    #[derive(Default, Clone)]
    struct Seen {
        records: Arc<Mutex<Vec<RunRecord>>>,
        finished: Arc<Mutex<Vec<RunFinished>>>,
    }

    impl Seen {
        fn finished(&self, run: &RunId) -> Option<RunFinished> {
            self.finished.lock().expect("lock").iter().find(|f| &f.run == run).cloned()
        }
        fn records(&self, run: &RunId) -> Vec<RunRecord> {
            self.records.lock().expect("lock").iter().filter(|r| &r.id == run).cloned().collect()
        }
    }

    struct Collector(Seen);

    impl Actor for Collector {
        type Context = Context<Self>;
    }

    impl Handler<RecordRun> for Collector {
        type Result = ();
        fn handle(&mut self, msg: RecordRun, _ctx: &mut Self::Context) {
            self.0.records.lock().expect("lock").push(msg.0);
        }
    }

    impl Handler<RunFinished> for Collector {
        type Result = ();
        fn handle(&mut self, msg: RunFinished, _ctx: &mut Self::Context) {
            self.0.finished.lock().expect("lock").push(msg);
        }
    }

    fn run_spec(command: &str) -> RunSpec {
        let now = Utc::now();
        RunSpec {
            job_version: Some(1),
            run: RunId::generate(),
            job: JobName::parse("job-a").expect("valid name"),
            command: command.into(),
            shell: "/bin/bash".into(),
            env: BTreeMap::new(),
            working_dir: None,
            timeout: None,
            kill_grace: Duration::from_secs(2),
            max_output_bytes: 4096,
            scheduled_at: now,
            dispatched_at: now,
            trigger: Trigger::Schedule,
            attempt: 1,
            fence: Fence(7),
            launch: RunLaunch::default(),
            fire_at: None,
            params: BTreeMap::new(),
        }
    }

    fn outcome(exit_code: Option<i32>, ended_by: Option<EndedBy>) -> ProcessOutcome {
        let now = Utc::now();
        ProcessOutcome {
            started_at: now,
            ended_at: now,
            exit_code,
            signal: None,
            ended_by,
            spawn_error: None,
            output: "out\n".into(),
            output_bytes: 4,
            truncated: false,
            limits: None,
        }
    }

    /// "panic" panics, "ok" succeeds, "wait" runs until killed.
    fn fake_runner() -> Runner {
        Arc::new(|spec: RunSpec, kill: oneshot::Receiver<KillReason>, _spawned: oneshot::Sender<Spawned>| {
            Box::pin(async move {
                match spec.command.as_str() {
                    "panic" => panic!("boom"),
                    "wait" => match kill.await {
                        Ok(reason) => outcome(None, Some(EndedBy::Killed(reason))),
                        Err(_) => std::future::pending().await,
                    },
                    _ => outcome(Some(0), None),
                }
            })
        })
    }

    fn pool(size: usize, queue: usize, runner: Runner) -> (Addr<ExecutorPool>, Seen) {
        let seen = Seen::default();
        let collector = Collector(seen.clone()).start();
        let addr = ExecutorPool::start_with_runner(
            size,
            queue,
            WorkerId("w1".into()),
            collector.clone().recipient(),
            collector.recipient(),
            runner,
        );
        (addr, seen)
    }

    async fn wait_until(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if probe() {
                return true;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        probe()
    }

    async fn finished(seen: &Seen, run: &RunId) -> RunFinished {
        let mut got = None;
        wait_until(Duration::from_secs(10), || {
            got = seen.finished(run);
            got.is_some()
        })
        .await;
        got.expect("run finished in time")
    }

    #[actix::test]
    async fn panicking_run_is_recorded_as_error_and_executor_restarts() {
        let (pool, seen) = pool(1, 4, fake_runner());
        let crash = run_spec("panic");
        let next = run_spec("ok");
        pool.do_send(StartRun(crash.clone()));
        // Queued behind the crashing run, started on the restarted executor.
        pool.do_send(StartRun(next.clone()));

        assert_eq!(finished(&seen, &crash.run).await.status, RunStatus::Error);
        let records = seen.records(&crash.run);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].status, RunStatus::Running);
        assert_eq!(records[1].status, RunStatus::Error);
        assert_eq!(records[1].err, "executor crashed: boom");

        assert_eq!(finished(&seen, &next.run).await.status, RunStatus::Succeeded);
        let last = seen.records(&next.run).pop().expect("record");
        assert_eq!(last.output, "out\n");
        assert_eq!(last.worker, WorkerId("w1".into()));
        assert_eq!(last.fence, Fence(7));

        // A later run on the same (restarted) executor works too; the system is alive.
        let again = run_spec("ok");
        pool.do_send(StartRun(again.clone()));
        assert_eq!(finished(&seen, &again.run).await.status, RunStatus::Succeeded);
        let status = pool.send(GetPoolStatus).await.expect("pool alive");
        assert_eq!((status.restarts, status.busy, status.queued, status.size), (1, 0, 0, 1));
    }

    #[actix::test]
    async fn full_queue_records_run_as_skipped_saturated() {
        let (pool, seen) = pool(1, 1, fake_runner());
        let (a, b, c) = (run_spec("wait"), run_spec("wait"), run_spec("ok"));
        for s in [&a, &b, &c] {
            pool.do_send(StartRun(s.clone()));
        }
        assert_eq!(finished(&seen, &c.run).await.status, RunStatus::Skipped);
        let records = seen.records(&c.run);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].err, "saturated: all 1 executors busy and 1 runs queued");
        assert_eq!(records[0].started_at, None);
        let status = pool.send(GetPoolStatus).await.expect("pool alive");
        assert_eq!((status.busy, status.queued, status.queue_capacity), (1, 1, 1));

        // Killing the running one lets the queued one start; then kill that too.
        pool.do_send(KillRun { run: a.run.clone(), reason: KillReason::Requested });
        assert_eq!(finished(&seen, &a.run).await.status, RunStatus::Killed);
        assert!(wait_until(Duration::from_secs(5), || seen.records(&b.run).len() == 1).await);
        pool.do_send(KillRun { run: b.run.clone(), reason: KillReason::Shutdown });
        assert_eq!(finished(&seen, &b.run).await.status, RunStatus::Killed);
        let last = seen.records(&b.run).pop().expect("record");
        assert_eq!(last.err, KillReason::Shutdown.describe());
    }

    #[actix::test]
    async fn killing_a_queued_run_records_it_killed() {
        let (pool, seen) = pool(1, 2, fake_runner());
        let (a, b) = (run_spec("wait"), run_spec("ok"));
        pool.do_send(StartRun(a.clone()));
        pool.do_send(StartRun(b.clone()));
        pool.do_send(KillRun { run: b.run.clone(), reason: KillReason::Replaced });
        assert_eq!(finished(&seen, &b.run).await.status, RunStatus::Killed);
        let records = seen.records(&b.run);
        assert_eq!(records.len(), 1, "never started");
        assert_eq!(records[0].err, KillReason::Replaced.describe());
        assert_eq!(pool.send(GetPoolStatus).await.expect("pool alive").queued, 0);

        pool.do_send(KillRun { run: a.run.clone(), reason: KillReason::Requested });
        assert_eq!(finished(&seen, &a.run).await.status, RunStatus::Killed);
        let status = pool.send(GetPoolStatus).await.expect("pool alive");
        assert_eq!((status.busy, status.queued, status.restarts), (0, 0, 0));
    }

    #[actix::test]
    async fn real_sleep_is_killed_within_a_second() {
        let seen = Seen::default();
        let collector = Collector(seen.clone()).start();
        let pool =
            ExecutorPool::start(2, 2, WorkerId("w1".into()), collector.clone().recipient(), collector.recipient());
        let spec = run_spec("echo started; sleep 60");
        pool.do_send(StartRun(spec.clone()));
        assert!(wait_until(Duration::from_secs(5), || !seen.records(&spec.run).is_empty()).await);
        // Let bash get to the sleep.
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        let t0 = std::time::Instant::now();
        pool.do_send(KillRun { run: spec.run.clone(), reason: KillReason::Requested });
        assert_eq!(finished(&seen, &spec.run).await.status, RunStatus::Killed);
        assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
        let last = seen.records(&spec.run).pop().expect("record");
        assert_eq!(last.status, RunStatus::Killed);
        assert_eq!(last.err, "killed by request");
        assert_eq!(last.output, "started\n");
        assert_eq!(last.signal, Some(15));
        assert!(last.duration_ms.is_some() && last.ended_at.is_some());
    }

    #[actix::test]
    async fn real_run_succeeds_with_running_then_final_record() {
        let seen = Seen::default();
        let collector = Collector(seen.clone()).start();
        let pool =
            ExecutorPool::start(1, 0, WorkerId("w1".into()), collector.clone().recipient(), collector.recipient());
        let spec = run_spec("echo \"$DISTCRON_FENCE\"; exit 4");
        pool.do_send(StartRun(spec.clone()));
        assert_eq!(finished(&seen, &spec.run).await.status, RunStatus::Failed);
        let records = seen.records(&spec.run);
        assert_eq!(records.iter().map(|r| r.status).collect::<Vec<_>>(), [RunStatus::Running, RunStatus::Failed]);
        assert_eq!(records[1].output, "7\n");
        assert_eq!(records[1].exit_code, Some(4));
        assert_eq!(records[1].err, "exit code 4");
    }
}
