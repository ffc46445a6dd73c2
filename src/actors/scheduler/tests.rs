//! The scheduler actor on the embedded backends (claims, membership, SQLite job store), with a
//! recorder standing in for the executor pool and the log pipeline: what it dispatches, skips,
//! kills and marks for real ticks of the wall clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Timelike, Utc};

use super::*;
use crate::backend::embedded::{EmbeddedClaims, EmbeddedJobStore, EmbeddedMembership};

/// Everything the scheduler sent to the pool and the log pipeline.
#[derive(Default)]
struct Seen {
    started: Vec<RunSpec>,
    killed: Vec<KillRun>,
    records: Vec<RunRecord>,
}

struct Recorder(Arc<Mutex<Seen>>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<StartRun> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: StartRun, _: &mut Self::Context) {
        self.0.lock().expect("seen").started.push(msg.0);
    }
}

impl Handler<KillRun> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: KillRun, _: &mut Self::Context) {
        self.0.lock().expect("seen").killed.push(msg);
    }
}

impl Handler<RecordRun> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: RecordRun, _: &mut Self::Context) {
        self.0.lock().expect("seen").records.push(msg.0);
    }
}

struct Harness {
    scheduler: Addr<SchedulerActor>,
    claims: Arc<EmbeddedClaims>,
    seen: Arc<Mutex<Seen>>,
    _dir: tempfile::TempDir,
}

fn job(name: &str, cron_expr: &str, concurrency: &str) -> Job {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "command": "true",
        "cron_expr": cron_expr,
        "concurrency": concurrency,
        "dialect": "distcron",
        "version": 1,
    }))
    .expect("a valid job")
}

fn start(jobs: Vec<Job>) -> Harness {
    let claims = Arc::new(EmbeddedClaims::default());
    start_with_claims(jobs, claims.clone(), claims)
}

/// [`start`] with `port` as the scheduler's claims store (`claims` kept in the harness).
fn start_with_claims(jobs: Vec<Job>, port: Arc<dyn Claims>, claims: Arc<EmbeddedClaims>) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedJobStore::open(&dir.path().join("jobs.sqlite3")).expect("job store");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorder = Recorder(seen.clone()).start();
    let now = Utc::now();
    let settings = SchedulerSettings {
        worker: WorkerInfo {
            id: WorkerId("w1".into()),
            hostname: "test".into(),
            address: String::new(),
            version: "test".into(),
            started_at: now,
            running: 0,
            capacity: 4,
            last_heartbeat: now,
            labels: Default::default(),
            api_addr: None,
        },
        default_tz: chrono_tz::UTC,
        misfire_grace: Duration::from_secs(5),
        heartbeat: Duration::from_secs(1),
        shell: "/bin/sh".into(),
        kill_grace: Duration::from_secs(1),
        max_output_bytes: 1024,
        failover_grace: Duration::from_secs(2),
        on_session_loss: SessionLossPolicy::Finish,
        launch: RunLaunch::default(),
    };
    let peers = SchedulerPeers {
        claims: port,
        members: Arc::new(EmbeddedMembership::new(Duration::from_secs(10))),
        jobs: Arc::new(store),
        start: recorder.clone().recipient(),
        kill: recorder.clone().recipient(),
        log: recorder.recipient(),
        metrics: crate::metrics::Metrics::default(),
        claims_kind: "embedded",
    };
    let scheduler = SchedulerActor::new(settings, peers).start();
    scheduler.do_send(Resynced { jobs, revision: Revision(1) });
    Harness { scheduler, claims, seen, _dir: dir }
}

/// Polls `what` every 20 ms until it holds or `secs` pass.
async fn wait_until(secs: u64, mut what: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    what()
}

fn name(s: &str) -> JobName {
    JobName::parse(s).expect("name")
}

#[actix::test]
async fn every_tick_is_dispatched_once_in_order_with_its_mark_and_the_mark_goes_with_the_run() {
    let h = start(vec![job("tick", "* * * * * *", "allow")]);
    assert!(wait_until(10, || h.seen.lock().expect("seen").started.len() >= 3).await, "three ticks dispatched");
    let started: Vec<RunSpec> = h.seen.lock().expect("seen").started.clone();
    let ticks: Vec<DateTime<Utc>> = started.iter().map(|s| s.scheduled_at).collect();
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "one run per tick, in order: {ticks:?}");
    assert!(ticks.iter().all(|t| t.nanosecond() == 0), "ticks are whole seconds: {ticks:?}");
    assert!(started.iter().all(|s| s.trigger == Trigger::Schedule && s.attempt == 1 && s.job_version == Some(1)));
    // The running mark went to the claims store with the claim.
    let marks = h.claims.running(Some(&name("tick"))).await.expect("marks");
    for spec in &started {
        assert!(marks.iter().any(|m| m.run == spec.run), "run {} has its running mark", spec.run);
    }
    for spec in &started {
        h.scheduler.do_send(RunFinished { run: spec.run.clone(), job: spec.job.clone(), status: RunStatus::Succeeded });
    }
    let finished: Vec<RunId> = started.iter().map(|s| s.run.clone()).collect();
    let mut cleared = false;
    for _ in 0..250 {
        let marks = h.claims.running(Some(&name("tick"))).await.expect("marks");
        if !marks.iter().any(|m| finished.contains(&m.run)) {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cleared, "the marks of finished runs are cleared");
    assert!(h.seen.lock().expect("seen").records.is_empty(), "nothing skipped or missed");
}

#[actix::test]
async fn forbid_skips_ticks_while_the_first_run_lives_and_records_why() {
    let h = start(vec![job("slow", "* * * * * *", "forbid")]);
    assert!(
        wait_until(10, || !h.seen.lock().expect("seen").records.is_empty()).await,
        "a later tick is recorded skipped"
    );
    let seen = h.seen.lock().expect("seen");
    assert_eq!(seen.started.len(), 1, "one run only while it lives");
    let first = &seen.started[0];
    let skipped = &seen.records[0];
    assert_eq!(skipped.status, RunStatus::Skipped);
    assert!(skipped.scheduled_at > first.scheduled_at);
    let reason = &skipped.err;
    assert!(reason.contains(&first.run.to_string()) && reason.contains("forbid"), "{reason}");
}

#[actix::test]
async fn replace_kills_the_live_run_before_starting_the_next() {
    let h = start(vec![job("swap", "* * * * * *", "replace")]);
    assert!(wait_until(10, || h.seen.lock().expect("seen").started.len() >= 2).await, "two ticks dispatched");
    let seen = h.seen.lock().expect("seen");
    let first = &seen.started[0];
    assert!(
        seen.killed.iter().any(|k| k.run == first.run && k.reason == KillReason::Replaced),
        "the first run is killed as replaced"
    );
}

#[actix::test]
async fn run_now_is_claimed_once_and_dispatched_as_manual() {
    let h = start(vec![job("manual", "0 0 1 1 *", "forbid")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        h.scheduler.do_send(RunRequested {
            job: name("manual"),
            request: "req-1".into(),
            env: Default::default(),
            retry: None,
        });
    }
    assert!(wait_until(5, || !h.seen.lock().expect("seen").started.is_empty()).await, "run-now dispatched");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = h.seen.lock().expect("seen");
    assert_eq!(seen.started.len(), 1, "the same request id runs once");
    assert_eq!(seen.started[0].trigger, Trigger::Manual);
}

#[actix::test]
async fn a_claimed_run_now_whose_live_runs_cannot_be_listed_is_recorded_skipped_not_dropped() {
    // Nemesis finding (issue 14): during an etcd member outage a run-now was claimed, listing
    // the job's live runs failed, and the request was neither run nor recorded.
    use crate::backend::faulty::{Fault, Faulty};
    let faulty = Arc::new(Faulty::new(EmbeddedClaims::default(), "embedded claims"));
    faulty.fail("running", Fault::Down);
    let h = start_with_claims(
        vec![job("guarded", "0 0 1 1 *", "replace")],
        faulty.clone(),
        Arc::new(EmbeddedClaims::default()),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.scheduler.do_send(RunRequested {
        job: name("guarded"),
        request: "req-1".into(),
        env: Default::default(),
        retry: None,
    });
    let recorded = wait_until(10, || !h.seen.lock().expect("seen").records.is_empty()).await;
    let seen = h.seen.lock().expect("seen");
    assert!(recorded, "the claimed request has an account");
    assert!(seen.started.is_empty(), "nothing started without the policy check");
    assert_eq!(seen.records.len(), 1);
    assert_eq!((seen.records[0].status, seen.records[0].trigger), (RunStatus::Skipped, Trigger::Manual));
    assert!(seen.records[0].err.contains("live runs could not be listed"), "{}", seen.records[0].err);
}

#[actix::test]
async fn a_removed_job_stops_firing() {
    let h = start(vec![job("gone", "* * * * * *", "allow")]);
    assert!(wait_until(10, || !h.seen.lock().expect("seen").started.is_empty()).await, "the job fires");
    h.scheduler.do_send(JobRemoved { name: name("gone"), revision: Revision(2) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = h.seen.lock().expect("seen").started.len();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(h.seen.lock().expect("seen").started.len(), before, "no tick after removal");
    let status = h.scheduler.send(GetSchedulerStatus).await.expect("status");
    assert_eq!(status.planned_jobs, 0);
}

/// `job` with `selector`.
fn job_with_selector(name: &str, cron_expr: &str, selector: &[(&str, &str)]) -> Job {
    let mut j = job(name, cron_expr, "allow");
    j.selector = selector.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    j
}

#[actix::test]
async fn a_job_no_live_worker_matches_is_recorded_skipped_no_eligible_worker_per_tick() {
    // The harness's worker has no labels: `zone=b` matches nobody, an empty selector everybody.
    let h = start(vec![
        job_with_selector("zoned", "* * * * * *", &[("zone", "b")]),
        job_with_selector("anywhere", "* * * * * *", &[]),
        job_with_selector("zoned-manual", "0 0 1 1 *", &[("zone", "b")]),
    ]);
    let skipped_of = |seen: &Seen, job: &str| -> Vec<RunRecord> {
        seen.records.iter().filter(|r| r.job.as_str() == job).cloned().collect()
    };
    assert!(
        wait_until(10, || skipped_of(&h.seen.lock().expect("seen"), "zoned").len() >= 3).await,
        "three ticks of the zoned job recorded"
    );
    h.scheduler.do_send(RunRequested {
        job: name("zoned-manual"),
        request: "req-z".into(),
        env: Default::default(),
        retry: None,
    });
    assert!(
        wait_until(10, || !skipped_of(&h.seen.lock().expect("seen"), "zoned-manual").is_empty()).await,
        "the run-now request of a job nobody matches is recorded"
    );
    let seen = h.seen.lock().expect("seen");
    assert!(seen.started.iter().all(|s| s.job.as_str() == "anywhere"), "nothing of the zoned jobs started");
    assert!(seen.started.iter().any(|s| s.job.as_str() == "anywhere"), "an empty selector runs anywhere");
    let zoned = skipped_of(&seen, "zoned");
    let mut ticks: Vec<DateTime<Utc>> = zoned.iter().map(|r| r.scheduled_at).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), zoned.len(), "one record per tick");
    for r in zoned.iter().chain(&skipped_of(&seen, "zoned-manual")) {
        assert_eq!(r.status, RunStatus::Skipped);
        assert!(r.err.starts_with(NO_ELIGIBLE_WORKER) && r.err.contains("zone=b"), "{}", r.err);
    }
    assert_eq!(skipped_of(&seen, "zoned-manual")[0].trigger, Trigger::Manual);
}
