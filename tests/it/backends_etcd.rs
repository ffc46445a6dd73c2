//! The etcd adapters against a real etcd: the conformance suites every adapter passes, plus what
//! only etcd does (seed keys, compaction, sessions, lost runs).

use std::time::Duration;

use chrono::Utc;
use distcron::backend::conformance;
use distcron::backend::etcd::{EtcdBackend, EtcdSettings};
use distcron::backend::{
    BackendError, Change, Claims, JobStore, Membership, Precondition, RunningMark, SessionEvent, Signal, TickRequest,
};
use distcron::domain::{Dialect, Fence, JobName, Revision, RunId, Trigger, WorkerId};
use futures::StreamExt;

use crate::support::etcd::EtcdServer;

async fn backend(etcd: &EtcdServer, prefix: &str, ttl_secs: u64) -> EtcdBackend {
    let mut settings = EtcdSettings::new(etcd.endpoints());
    settings.prefix = prefix.to_owned();
    settings.session_ttl = Duration::from_secs(ttl_secs);
    EtcdBackend::connect(&settings).await.expect("connect to etcd")
}

async fn raw(etcd: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect(etcd.endpoints(), None).await.expect("etcd client")
}

async fn get(c: &mut etcd_client::Client, key: &str) -> Option<String> {
    let resp = c.get(key, None).await.expect("get");
    resp.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

#[tokio::test]
async fn etcd_adapters_pass_every_conformance_suite() {
    let etcd = EtcdServer::start();
    let b = backend(&etcd, "/cron/", 10).await;
    conformance::job_store_suite(b.jobs.clone()).await;
    conformance::membership_suite(b.members.clone()).await;
    conformance::claims_suite(b.claims.clone()).await;
    conformance::last_ticks_survive_reopen(|| async {
        let claims: std::sync::Arc<dyn Claims> = backend(&etcd, "/cron/", 10).await.claims;
        claims
    })
    .await;
}

#[tokio::test]
async fn etcd_adapters_pass_the_suites_on_a_three_member_cluster_under_another_prefix() {
    let etcd = EtcdServer::cluster(3);
    let b = backend(&etcd, "/other/", 10).await;
    conformance::job_store_watch(b.jobs.clone()).await;
    conformance::job_store_concurrent_writers(b.jobs.clone()).await;
    conformance::claims_tick_race(b.claims.clone()).await;
    let mut c = raw(&etcd).await;
    let outside =
        c.get("/cron/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.expect("get");
    assert_eq!(outside.count(), 0, "nothing is written outside the configured prefix");
}

#[tokio::test]
async fn a_job_written_by_the_seed_master_is_read_with_the_seed_meaning() {
    let etcd = EtcdServer::start();
    let b = backend(&etcd, "/cron/", 10).await;
    let mut c = raw(&etcd).await;
    // Exactly what the seed's master writes on POST /job/save.
    c.put("/cron/jobs/seedjob", r#"{"name":"seedjob","command":"echo hello","cron_expr":"*/5 * * * * *"}"#, None)
        .await
        .expect("put");
    c.put("/cron/jobs/broken", "not json", None).await.expect("put");
    let (jobs, _) = b.jobs.snapshot().await.expect("snapshot");
    assert_eq!(jobs.len(), 1, "an unreadable key is skipped, not an error: {jobs:?}");
    let job = &jobs[0];
    assert_eq!(
        (job.name.as_str(), job.command.as_str(), job.cron_expr.as_str()),
        ("seedjob", "echo hello", "*/5 * * * * *")
    );
    assert_eq!((job.dialect, job.version, job.enabled), (Dialect::Seed, 0, true));
    // The seed's job is updated with version 0 and keeps its fields readable by the seed.
    let name = JobName::parse("seedjob").expect("name");
    let mut changed = job.clone();
    changed.command = "echo changed".into();
    let out = b.jobs.put(changed, Precondition::Version(0)).await.expect("update a seed job");
    assert_eq!(out.job.version, 1);
    let stored: serde_json::Value =
        serde_json::from_str(&get(&mut c, "/cron/jobs/seedjob").await.expect("stored")).expect("json");
    assert_eq!((stored["name"].as_str(), stored["command"].as_str()), (Some("seedjob"), Some("echo changed")));
    assert_eq!(b.jobs.delete(&name, None).await.expect("delete").map(|j| j.version), Some(1));
}

#[tokio::test]
async fn a_snapshot_larger_than_a_page_reads_every_job_at_one_revision() {
    let etcd = EtcdServer::start();
    let b = backend(&etcd, "/cron/", 10).await;
    let mut c = raw(&etcd).await;
    for chunk in 0..12 {
        let ops: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| {
                let name = format!("bulk-{:05}", chunk * 100 + i);
                let job = serde_json::json!({ "name": name, "command": "true", "cron_expr": "0 * * * *" });
                etcd_client::TxnOp::put(format!("/cron/jobs/{name}"), job.to_string(), None)
            })
            .collect();
        c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("bulk put");
    }
    let (jobs, revision) = b.jobs.snapshot().await.expect("snapshot");
    assert_eq!(jobs.len(), 1200);
    let names: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names.len(), 1200, "every job once");
    let current = c.get("/", Some(etcd_client::GetOptions::new().with_count_only())).await.expect("get");
    assert_eq!(revision.0, current.header().expect("header").revision());
}

#[tokio::test]
async fn seed_kill_keys_and_run_keys_arrive_as_signals() {
    let etcd = EtcdServer::start();
    let b = backend(&etcd, "/cron/", 10).await;
    let mut c = raw(&etcd).await;
    let (_, rev) = b.jobs.snapshot().await.expect("snapshot");
    let mut stream = b.jobs.watch(Revision(rev.0 + 1)).await.expect("watch");
    // The seed's master: an empty value on a short lease.
    let lease = c.lease_grant(1, None).await.expect("lease");
    c.put("/cron/killer/job1", "", Some(etcd_client::PutOptions::new().with_lease(lease.id()))).await.expect("put");
    c.put("/cron/run/job1", "request-7", None).await.expect("put");
    c.put("/cron/lock/job1", "", None).await.expect("put");
    let first =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("event").expect("item").expect("ok");
    let job = JobName::parse("job1").expect("name");
    assert_eq!(first.change, Change::Signal(Signal::Kill { job: job.clone(), run: None }));
    let second =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("event").expect("item").expect("ok");
    assert_eq!(
        second.change,
        Change::Signal(Signal::RunNow { job, request: "request-7".into(), env: Default::default(), retry: None })
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_says_compacted() {
    let etcd = EtcdServer::start();
    let b = backend(&etcd, "/cron/", 10).await;
    let name = JobName::parse("compacted").expect("name");
    let first = b.jobs.put(conformance::sample_job(&name), Precondition::Absent).await.expect("put");
    b.jobs.put(conformance::sample_job(&name), Precondition::Any).await.expect("put");
    let mut c = raw(&etcd).await;
    let compacted = c
        .get("/", Some(etcd_client::GetOptions::new().with_count_only()))
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    c.compact(compacted, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    // etcd tells a compacted start in the watch's first answers: as the error of `watch` or as
    // the stream's first item (the WatchActor resyncs on either).
    let error = match b.jobs.watch(first.revision).await {
        Err(e) => e,
        Ok(mut stream) => match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("expected Compacted, got {other:?}"),
        },
    };
    match error {
        BackendError::Compacted { requested, compacted: upto } => {
            assert!(requested >= first.revision);
            assert!(upto.0 >= first.revision.0 && upto.0 < compacted, "compacted up to {upto}");
        }
        e => panic!("expected Compacted, got {e:?}"),
    }
    assert!(b.jobs.watch(Revision(compacted + 1)).await.is_ok(), "a watch after the compaction works");
}

#[tokio::test]
async fn a_tick_claim_returns_the_previous_tick_and_the_live_runs_in_one_answer() {
    let etcd = EtcdServer::start();
    let b = backend(&etcd, "/cron/", 10).await;
    let job = JobName::parse("checked").expect("name");
    let t = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("time");
    let first = b.claims.claim_tick_checked(&job, t, true).await.expect("claim").expect("won");
    assert_eq!((first.previous, first.running.len()), (None, 0));
    let mark = RunningMark {
        job: job.clone(),
        run: RunId::generate(),
        worker: WorkerId("w".into()),
        scheduled_at: t,
        since: t,
        fence: Some(first.fence),
        trigger: None,
    };
    b.claims.mark_running(&mark).await.expect("mark");
    let next = t + chrono::Duration::seconds(1);
    let second = b.claims.claim_tick_checked(&job, next, true).await.expect("claim").expect("won");
    assert_eq!(second.previous, Some(t));
    assert_eq!(second.running, vec![mark]);
    assert!(second.fence > first.fence);
    let mut c = raw(&etcd).await;
    assert_eq!(
        get(&mut c, "/cron/claim/checked").await.as_deref(),
        Some(format!("{:015}", next.timestamp_millis()).as_str())
    );
    let mut known = None;
    for _ in 0..40 {
        known = b.claims.known_claim(&job);
        if known == Some(next) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(known, Some(next), "the claim cache learns the latest claim");
}

#[tokio::test]
async fn marks_of_an_expired_session_are_reported_lost_and_cleared_marks_are_not() {
    let etcd = EtcdServer::start();
    let observer = backend(&etcd, "/cron/", 10).await;
    let mut lost = observer.claims.watch_lost().await.expect("watch lost");
    let dying = backend(&etcd, "/cron/", 2).await;
    let worker = WorkerId("dying".into());
    dying.members.join(&conformance::sample_worker(&worker)).await.expect("join");
    let job = JobName::parse("long").expect("name");
    let now = Utc::now();
    let mark = |run: &str| RunningMark {
        job: job.clone(),
        run: RunId(run.into()),
        worker: worker.clone(),
        scheduled_at: now,
        since: now,
        fence: Some(Fence(1)),
        trigger: Some(Trigger::Manual),
    };
    let (finished, running) = (mark("finished"), mark("running"));
    dying.claims.mark_running(&finished).await.expect("mark");
    dying.claims.mark_running(&running).await.expect("mark");
    dying.claims.clear_running(&job, &finished.run).await.expect("clear");
    // The process "dies": its keep-alive stops and the lease expires after its TTL.
    drop(dying);
    let got = tokio::time::timeout(Duration::from_secs(10), lost.next())
        .await
        .expect("a lost run within the TTL")
        .expect("item");
    assert_eq!(got, running, "only the run still marked when the session expired is lost");
    assert!(observer.members.live().await.expect("live").iter().all(|w| w.id != worker), "the dead worker is gone");
    assert!(tokio::time::timeout(Duration::from_millis(500), lost.next()).await.is_err(), "nothing else is lost");
}

#[tokio::test]
async fn a_revoked_session_is_reported_lost_then_renewed_with_the_worker_published_again() {
    let etcd = EtcdServer::start();
    let b = backend(&etcd, "/cron/", 3).await;
    let mut events = b.members.session_events();
    let worker = WorkerId("renewed".into());
    b.members.join(&conformance::sample_worker(&worker)).await.expect("join");
    let mut c = raw(&etcd).await;
    // Someone (an operator, etcd itself) revokes the session's lease.
    let resp = c.get("/cron/workers/renewed", None).await.expect("get");
    c.lease_revoke(resp.kvs()[0].lease()).await.expect("revoke");
    let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event").expect("item");
    assert_eq!(first, SessionEvent::Lost);
    let job = JobName::parse("paused").expect("name");
    let second = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event").expect("item");
    assert_eq!(second, SessionEvent::Renewed);
    assert!(get(&mut c, "/cron/workers/renewed").await.is_some(), "the worker is published on the new session");
    assert!(b.claims.claim_tick(&job, Utc::now()).await.expect("claim after renewal").is_some());
}

#[tokio::test]
async fn a_worker_dying_right_after_its_claim_leaves_a_mark_reported_lost_with_the_claims_fence() {
    let etcd = EtcdServer::start();
    let observer = backend(&etcd, "/cron/", 10).await;
    let mut lost = observer.claims.watch_lost().await.expect("watch lost");
    let dying = backend(&etcd, "/cron/", 2).await;
    let worker = WorkerId("claimer".into());
    dying.members.join(&conformance::sample_worker(&worker)).await.expect("join");
    let job = JobName::parse("claimed-then-dead").expect("name");
    let tick = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("time");
    let mark = RunningMark {
        job: job.clone(),
        run: RunId::generate(),
        worker: worker.clone(),
        scheduled_at: tick,
        since: Utc::now(),
        fence: None,
        trigger: Some(Trigger::Schedule),
    };
    let request =
        TickRequest { job: job.clone(), tick, with_running: true, mark: Some(mark.clone()), mark_if_idle: true };
    let claim = dying.claims.claim_ticks(&[request]).await.pop().expect("answer").expect("claim").expect("won");
    assert!(claim.marked, "the mark is written with the claim");
    // The process dies between its claim and the spawn: nothing else is written.
    drop(dying);
    let got = tokio::time::timeout(Duration::from_secs(10), lost.next())
        .await
        .expect("the claimed tick is reported lost within the TTL")
        .expect("item");
    assert_eq!(got, RunningMark { fence: Some(claim.fence), ..mark }, "the lost mark carries the claim's fence");
}

#[test]
fn a_session_survives_its_callers_thread_being_blocked_longer_than_the_ttl() {
    // The actors' thread: one current-thread runtime, blocked as a saturated scheduler would be.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let etcd = EtcdServer::start();
    let worker = WorkerId("busy".into());
    let (b, mut events, lease) = rt.block_on(async {
        let b = backend(&etcd, "/cron/", 2).await;
        let events = b.members.session_events();
        b.members.join(&conformance::sample_worker(&worker)).await.expect("join");
        let mut c = raw(&etcd).await;
        let lease = c.get("/cron/workers/busy", None).await.expect("get").kvs()[0].lease();
        (b, events, lease)
    });
    std::thread::sleep(Duration::from_secs(5));
    rt.block_on(async {
        let mut c = raw(&etcd).await;
        let resp = c.get("/cron/workers/busy", None).await.expect("get");
        assert_eq!(resp.kvs().first().map(|kv| kv.lease()), Some(lease), "the worker key is still on its lease");
        let ttl = c.lease_time_to_live(lease, None).await.expect("ttl");
        assert!(ttl.ttl() > 0, "the lease was kept alive while the caller's thread was blocked");
        let event = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
        assert!(event.is_err(), "no session event: the session was never lost ({event:?})");
        assert!(b.claims.claim_tick(&JobName::parse("after-busy").expect("name"), Utc::now()).await.is_ok());
    });
}
