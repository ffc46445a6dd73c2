//! Conformance suites: the guarantees of each port, as async checks every adapter must pass.
//!
//! One suite per trait ([`job_store_suite`], [`membership_suite`], [`claims_suite`],
//! [`log_store_suite`]), each the sequence of the smaller `pub` checks below, so a test can
//! run them one by one for sharper failures. The embedded adapters run them in their unit
//! tests; `tests/it/backends_etcd.rs` and `tests/it/backends_mongo.rs` run the same functions
//! against real etcd and MongoDB-wire servers. Therefore the checks know nothing of any adapter's internals, use fresh unique
//! names (jobs, workers, run ids), tolerate data other tests left in a shared store, and filter
//! watch events down to their own jobs. A failed guarantee panics with what was expected.
//!
//! The checks spawn tasks with `tokio::spawn` (to race writers), so they must run inside a
//! tokio runtime (`#[tokio::test]` or `#[actix_rt::test]`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeZone, Utc};
use futures::StreamExt;

use super::claims::{Claims, RunningMark, TickRequest};
use super::jobs::{Change, JobStore, Precondition, PutOutcome, Signal, WatchEvent, WatchStream};
use super::logs::{budget_marker, summary, JobStats, LogStore, RetentionPolicy, RunCursor, RunFilter, RunQuery};
use super::members::Membership;
use super::BackendError;
use crate::domain::{
    ConcurrencyPolicy, Dialect, Fence, Job, JobName, Revision, RunId, RunRecord, RunStatus, Trigger, WorkerId,
    WorkerInfo,
};

/// How long a check waits for an expected watch event.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How many tasks race in the concurrency checks.
const RACERS: usize = 16;

/// A name no other check (in this or another process) uses: `cf-<tag>-<uuid v7>-<seq>`.
pub fn unique(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!("cf-{tag}-{}-{}", uuid::Uuid::now_v7().simple(), SEQ.fetch_add(1, Ordering::Relaxed))
}

fn unique_job(tag: &str) -> JobName {
    JobName::parse(&unique(tag)).expect("unique names are valid job names")
}

/// `t` truncated to milliseconds, the precision every store keeps.
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("time in range")
}

/// A valid job named `name` (version and timestamps zero, for the store to set).
pub fn sample_job(name: &JobName) -> Job {
    Job {
        name: name.clone(),
        command: "echo conformance".into(),
        cron_expr: "*/5 * * * *".into(),
        tz: None,
        enabled: true,
        concurrency: ConcurrencyPolicy::Forbid,
        timeout_secs: 0,
        description: String::new(),
        env: Default::default(),
        working_dir: None,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        updated_at: DateTime::<Utc>::UNIX_EPOCH,
        version: 0,
        dialect: Dialect::Distcron,
        retention_days: None,
        limits: None,
        run_as_user: None,
        run_as_group: None,
        managed_by: None,
        alerts: None,
        jitter_secs: 0,
        selector: [("zone".to_owned(), "a".to_owned())].into_iter().collect(),
        retry: None,
        catchup: Default::default(),
    }
}

/// A worker's published info.
pub fn sample_worker(id: &WorkerId) -> WorkerInfo {
    let now = ms(Utc::now());
    WorkerInfo {
        id: id.clone(),
        hostname: "conformance-host".into(),
        address: "127.0.0.1".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: now,
        running: 0,
        capacity: 4,
        last_heartbeat: now,
        labels: [("zone".to_owned(), "a".to_owned())].into_iter().collect(),
        api_addr: None,
    }
}

/// A run record of `job` with a fresh id, started (or, for runs that never start, dispatched)
/// at `start`, lasting `duration_ms` when given. Times are truncated to milliseconds.
pub fn sample_run(
    job: &JobName,
    status: RunStatus,
    worker: &str,
    start: DateTime<Utc>,
    duration_ms: Option<u64>,
) -> RunRecord {
    let start = ms(start);
    let started = !matches!(status, RunStatus::Skipped | RunStatus::Missed | RunStatus::Error);
    let ended_at = status
        .is_final()
        .then(|| start + chrono::Duration::milliseconds(i64::try_from(duration_ms.unwrap_or(0)).unwrap_or(0)));
    RunRecord {
        id: RunId::generate(),
        job: job.clone(),
        command: "echo conformance".into(),
        status,
        trigger: Trigger::Schedule,
        scheduled_at: start,
        dispatched_at: start,
        started_at: started.then_some(start),
        ended_at,
        duration_ms,
        exit_code: match status {
            RunStatus::Succeeded => Some(0),
            RunStatus::Failed => Some(1),
            _ => None,
        },
        signal: None,
        err: if status == RunStatus::Succeeded { String::new() } else { format!("conformance {status}") },
        output: "out\n".into(),
        output_bytes: 4,
        output_truncated: false,
        worker: WorkerId(worker.to_owned()),
        attempt: 1,
        fence: Fence(1),
        job_version: Some(3),
        pgid: None,
        proc_start_ticks: None,
        fire_at: None,
        params: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Job store
// ---------------------------------------------------------------------------------------------

/// Every job store check, in sequence, on one store.
pub async fn job_store_suite(store: Arc<dyn JobStore>) {
    job_store_put_get_delete(Arc::clone(&store)).await;
    job_store_preconditions(Arc::clone(&store)).await;
    job_store_concurrent_writers(Arc::clone(&store)).await;
    job_store_audit(Arc::clone(&store)).await;
    job_store_watch(store).await;
}

/// Audited writes record who did what, with versions and definitions, newest first; a refused
/// write records nothing; pages follow the cursor; filters by job and actor; purge by age.
pub async fn job_store_audit(store: Arc<dyn JobStore>) {
    use crate::domain::{AuditAction, AuditContext, AuditQuery};
    let name = unique_job("audit");
    let other = unique_job("audit-other");
    let alice = format!("alice-{}", name.as_str());
    let bob = format!("bob-{}", name.as_str());
    let ctx = |actor: &str, action| AuditContext::new(actor, Some("192.0.2.7".into()), action);
    let before_all = Utc::now() - chrono::Duration::seconds(5);

    let created = put_ok(
        store.put_audited(sample_job(&name), Precondition::Absent, ctx(&alice, AuditAction::Create)).await,
        "create",
    );
    let mut changed = sample_job(&name);
    changed.command = "echo changed".into();
    put_ok(
        store.put_audited(changed.clone(), Precondition::Version(1), ctx(&bob, AuditAction::Replace)).await,
        "replace",
    );
    let refused = store.put_audited(changed.clone(), Precondition::Version(1), ctx(&bob, AuditAction::Replace)).await;
    assert!(matches!(refused, Err(BackendError::VersionConflict { .. })), "stale replace refused: {refused:?}");
    let current = store.get(&name).await.expect("get").expect("present");
    store
        .signal_audited(
            Signal::RunNow { job: name.clone(), request: "req-1".into(), env: Default::default(), retry: None },
            Some(current.clone()),
            ctx(&alice, AuditAction::Run).with_detail("req-1"),
        )
        .await
        .expect("audited run now");
    put_ok(store.put_audited(sample_job(&other), Precondition::Any, ctx(&alice, AuditAction::Replace)).await, "other");
    let deleted = store.delete_audited(&name, Some(2), ctx(&bob, AuditAction::Delete)).await.expect("delete");
    assert_eq!(deleted.map(|j| j.version), Some(2));
    assert_eq!(store.delete_audited(&name, None, ctx(&bob, AuditAction::Delete)).await.expect("delete again"), None);

    let page =
        store.audit(&AuditQuery { job: Some(name.clone()), limit: 10, ..Default::default() }).await.expect("audit");
    let seen: Vec<(AuditAction, &str, Option<u64>, Option<u64>)> =
        page.entries.iter().map(|e| (e.action, e.actor.as_str(), e.version_before, e.version_after)).collect();
    assert_eq!(
        seen,
        vec![
            (AuditAction::Delete, bob.as_str(), Some(2), None),
            (AuditAction::Run, alice.as_str(), Some(2), Some(2)),
            (AuditAction::Replace, bob.as_str(), Some(1), Some(2)),
            (AuditAction::Create, alice.as_str(), None, Some(1)),
        ],
        "exactly the changes made, newest first (a refused write and a no-op delete record nothing)"
    );
    assert_eq!(page.next_cursor, None);
    let replace = &page.entries[2];
    assert_eq!(replace.before.as_ref().map(|j| j.command.as_str()), Some(created.job.command.as_str()));
    assert_eq!(replace.after.as_ref().map(|j| j.command.as_str()), Some("echo changed"));
    assert_eq!(replace.client.as_deref(), Some("192.0.2.7"));
    assert!(replace.at >= before_all);
    assert_eq!(page.entries[1].detail.as_deref(), Some("req-1"));

    let first =
        store.audit(&AuditQuery { job: Some(name.clone()), limit: 3, ..Default::default() }).await.expect("page 1");
    assert_eq!(first.entries.len(), 3);
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = store
        .audit(&AuditQuery { job: Some(name.clone()), limit: 3, before: Some(cursor), ..Default::default() })
        .await
        .expect("page 2");
    assert_eq!(second.entries.iter().map(|e| e.action).collect::<Vec<_>>(), vec![AuditAction::Create]);
    assert_eq!(second.next_cursor, None);

    let by_alice = store
        .audit(&AuditQuery { actor: Some(alice.clone()), limit: 10, ..Default::default() })
        .await
        .expect("by actor");
    assert_eq!(
        by_alice.entries.iter().map(|e| (e.action, e.job.clone())).collect::<Vec<_>>(),
        vec![
            (AuditAction::Create, other.clone()),
            (AuditAction::Run, name.clone()),
            (AuditAction::Create, name.clone()),
        ]
    );

    store.purge_audit_before(before_all).await.expect("purge older entries");
    let kept =
        store.audit(&AuditQuery { job: Some(name.clone()), limit: 10, ..Default::default() }).await.expect("kept");
    assert_eq!(kept.entries.len(), 4, "a purge keeps entries made after its cutoff");
    store.purge_audit_before(Utc::now() + chrono::Duration::seconds(1)).await.expect("purge");
    let after =
        store.audit(&AuditQuery { actor: Some(alice), limit: 10, ..Default::default() }).await.expect("after purge");
    assert!(after.entries.is_empty(), "purged: {:?}", after.entries);
    store.delete(&other, None).await.expect("clean up");
}

fn put_ok(result: Result<PutOutcome, BackendError>, what: &str) -> PutOutcome {
    match result {
        Ok(out) => out,
        Err(e) => panic!("{what}: expected success, got {e:?}"),
    }
}

/// put/get/snapshot/delete; the store sets version and timestamps and ignores the caller's.
pub async fn job_store_put_get_delete(store: Arc<dyn JobStore>) {
    let name = unique_job("crud");
    assert_eq!(store.get(&name).await.expect("get missing"), None, "a fresh name is absent");
    let (_, rev0) = store.snapshot().await.expect("snapshot");

    let before = Utc::now() - chrono::Duration::seconds(5);
    let mut input = sample_job(&name);
    input.version = 42;
    input.created_at = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).single().expect("valid date");
    let created = put_ok(store.put(input.clone(), Precondition::Absent).await, "create");
    assert_eq!(created.previous, None);
    assert_eq!(created.job.version, 1, "a created job has version 1 whatever the caller sent");
    assert!(created.job.created_at >= before, "created_at is set by the store, not kept from the caller");
    assert!(created.job.updated_at >= created.job.created_at);
    assert!(created.revision > rev0, "a put advances the revision");
    let mut expected = input.clone();
    expected.version = created.job.version;
    expected.created_at = created.job.created_at;
    expected.updated_at = created.job.updated_at;
    assert_eq!(created.job, expected, "every other field is stored as given");

    assert_eq!(store.get(&name).await.expect("get"), Some(created.job.clone()));
    let (jobs, rev1) = store.snapshot().await.expect("snapshot");
    assert!(rev1 >= created.revision, "the snapshot revision covers the put");
    assert_eq!(jobs.iter().filter(|j| j.name == name).collect::<Vec<_>>(), vec![&created.job]);

    let mut changed = created.job.clone();
    changed.command = "echo changed".into();
    changed.created_at = DateTime::<Utc>::UNIX_EPOCH;
    let updated = put_ok(store.put(changed, Precondition::Version(1)).await, "update");
    assert_eq!(updated.previous, Some(created.job.clone()), "the previous job is returned");
    assert_eq!(updated.job.version, 2, "an update increments the version");
    assert_eq!(updated.job.created_at, created.job.created_at, "an update keeps created_at");
    assert!(updated.job.updated_at >= created.job.updated_at);
    assert_eq!(updated.job.command, "echo changed");
    assert!(updated.revision > created.revision, "revisions increase");
    assert_eq!(store.get(&name).await.expect("get"), Some(updated.job.clone()));

    let deleted = store.delete(&name, None).await.expect("delete");
    assert_eq!(deleted, Some(updated.job), "delete returns the deleted job");
    assert_eq!(store.get(&name).await.expect("get"), None, "a deleted job is gone");
    let (jobs, _) = store.snapshot().await.expect("snapshot");
    assert!(jobs.iter().all(|j| j.name != name), "a deleted job is not in the snapshot");
    assert_eq!(
        store.delete(&name, None).await.expect("delete missing"),
        None,
        "deleting a missing job is not an error"
    );
}

/// Every [`Precondition`] branch, the delete version check and their error variants; a refused
/// write changes nothing.
pub async fn job_store_preconditions(store: Arc<dyn JobStore>) {
    let name = unique_job("pre");
    let job = sample_job(&name);

    match store.put(job.clone(), Precondition::Version(1)).await {
        Err(BackendError::JobNotFound { name: n }) => assert_eq!(n, name),
        other => panic!("Version on a missing job: expected JobNotFound, got {other:?}"),
    }
    assert_eq!(store.get(&name).await.expect("get"), None, "a refused put creates nothing");

    let v1 = put_ok(store.put(job.clone(), Precondition::Any).await, "Any on a missing job");
    assert_eq!((v1.job.version, v1.previous.is_none()), (1, true), "Any creates");

    match store.put(job.clone(), Precondition::Absent).await {
        Err(BackendError::JobExists { name: n }) => assert_eq!(n, name),
        other => panic!("Absent on an existing job: expected JobExists, got {other:?}"),
    }
    match store.put(job.clone(), Precondition::Version(5)).await {
        Err(BackendError::VersionConflict { name: n, expected, found }) => {
            assert_eq!((n, expected, found), (name.clone(), 5, 1));
        }
        other => panic!("stale Version: expected VersionConflict, got {other:?}"),
    }
    assert_eq!(store.get(&name).await.expect("get"), Some(v1.job.clone()), "refused puts change nothing");

    let v2 = put_ok(store.put(job.clone(), Precondition::Any).await, "Any on an existing job");
    assert_eq!(v2.job.version, 2, "Any replaces and increments");
    assert_eq!(v2.previous.as_ref().map(|p| p.version), Some(1));
    let v3 = put_ok(store.put(job.clone(), Precondition::Version(2)).await, "matching Version");
    assert_eq!(v3.job.version, 3);
    assert_eq!(v3.job.created_at, v1.job.created_at, "created_at survives every update");

    match store.delete(&name, Some(1)).await {
        Err(BackendError::VersionConflict { name: n, expected, found }) => {
            assert_eq!((n, expected, found), (name.clone(), 1, 3));
        }
        other => panic!("delete with a stale version: expected VersionConflict, got {other:?}"),
    }
    assert_eq!(store.get(&name).await.expect("get"), Some(v3.job.clone()), "a refused delete deletes nothing");
    assert_eq!(store.delete(&name, Some(3)).await.expect("delete"), Some(v3.job));
    match store.delete(&name, Some(3)).await {
        Err(BackendError::JobNotFound { name: n }) => assert_eq!(n, name),
        other => panic!("delete of a missing job with a version: expected JobNotFound, got {other:?}"),
    }
    assert_eq!(store.delete(&name, None).await.expect("delete"), None);
}

/// Racing writers: of many puts with the same expected version (or many creates, or many
/// versioned deletes), exactly one succeeds and the others get the precise error.
pub async fn job_store_concurrent_writers(store: Arc<dyn JobStore>) {
    let name = unique_job("race");
    put_ok(store.put(sample_job(&name), Precondition::Absent).await, "create");

    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = Arc::clone(&store);
            let mut job = sample_job(&name);
            job.command = format!("echo racer {i}");
            tokio::spawn(async move { store.put(job, Precondition::Version(1)).await })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("racer task") {
            Ok(out) => winners.push(out),
            Err(BackendError::VersionConflict { expected: 1, found: 2, .. }) => {}
            Err(e) => panic!("a losing racer must get VersionConflict(expected 1, found 2), got {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one put with the same expected version wins");
    let stored = store.get(&name).await.expect("get").expect("present");
    assert_eq!(stored, winners[0].job, "the winner's write is the stored one");
    assert_eq!(stored.version, 2);

    let deletes: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = Arc::clone(&store);
            let name = name.clone();
            tokio::spawn(async move { store.delete(&name, Some(2)).await })
        })
        .collect();
    let mut deleted = 0;
    for task in deletes {
        match task.await.expect("delete task") {
            Ok(Some(_)) => deleted += 1,
            Err(BackendError::JobNotFound { .. }) => {}
            other => panic!("a losing delete must get JobNotFound, got {other:?}"),
        }
    }
    assert_eq!(deleted, 1, "exactly one versioned delete wins");

    let fresh = unique_job("race-create");
    let creates: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = Arc::clone(&store);
            let job = sample_job(&fresh);
            tokio::spawn(async move { store.put(job, Precondition::Absent).await })
        })
        .collect();
    let mut created = 0;
    for task in creates {
        match task.await.expect("create task") {
            Ok(_) => created += 1,
            Err(BackendError::JobExists { .. }) => {}
            Err(e) => panic!("a losing create must get JobExists, got {e:?}"),
        }
    }
    assert_eq!(created, 1, "exactly one create wins");
    store.delete(&fresh, None).await.expect("cleanup");
}

fn event_job(event: &WatchEvent) -> &JobName {
    match &event.change {
        Change::Put(job) => &job.name,
        Change::Delete(name) => name,
        Change::Invalid(invalid) => &invalid.name,
        Change::Signal(Signal::Kill { job, .. } | Signal::RunNow { job, .. }) => job,
    }
}

/// Reads `stream` until the event putting `sentinel`, keeping the events of `ours` jobs.
async fn collect_until(stream: &mut WatchStream, ours: &[&JobName], sentinel: &JobName) -> Vec<WatchEvent> {
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout(EVENT_WAIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no watch event within {EVENT_WAIT:?}; got so far: {seen:#?}"));
        let event = match item {
            Some(Ok(event)) => event,
            Some(Err(e)) => panic!("watch stream failed: {e:?}"),
            None => panic!("watch stream ended early; got so far: {seen:#?}"),
        };
        let job = event_job(&event);
        if job == sentinel {
            if matches!(event.change, Change::Put(_)) {
                return seen;
            }
        } else if ours.contains(&job) {
            seen.push(event);
        }
    }
}

/// Watch from snapshot revision + 1 sees every later put, delete and signal of the check's jobs
/// in order, exactly once, at the revisions the writes returned; a later watch from an old
/// revision replays the same history, and a watch from a middle revision starts there.
pub async fn job_store_watch(store: Arc<dyn JobStore>) {
    let (a, b, sentinel) = (unique_job("watch-a"), unique_job("watch-b"), unique_job("watch-end"));
    let ours = [&a, &b];
    let early = put_ok(store.put(sample_job(&a), Precondition::Absent).await, "put before the snapshot");
    let (_, rev0) = store.snapshot().await.expect("snapshot");
    assert!(rev0 >= early.revision);
    let from = Revision(rev0.0 + 1);
    let mut stream = store.watch(from).await.expect("watch from snapshot revision + 1");

    let mut expected: Vec<(Option<Revision>, Change)> = Vec::new();
    let mut changed = sample_job(&a);
    changed.command = "echo watched".into();
    let o1 = put_ok(store.put(changed, Precondition::Version(1)).await, "update a");
    expected.push((Some(o1.revision), Change::Put(o1.job.clone())));
    let kill_one = Signal::Kill { job: a.clone(), run: Some(RunId(unique("run"))) };
    let r = store.signal(kill_one.clone()).await.expect("kill signal");
    expected.push((Some(r), Change::Signal(kill_one)));
    let run_now = Signal::RunNow { job: a.clone(), request: unique("req"), env: Default::default(), retry: None };
    let r = store.signal(run_now.clone()).await.expect("run-now signal");
    expected.push((Some(r), Change::Signal(run_now)));
    // Run parameters and a pending retry attempt travel with the request.
    let at = whole_second(Utc::now());
    let with_params = Signal::RunNow {
        job: a.clone(),
        request: unique("req-params"),
        env: [("TARGET".to_owned(), "eu west".to_owned())].into(),
        retry: Some(crate::domain::RetryOf {
            scheduled_at: at,
            attempt: 2,
            due_at: at + chrono::Duration::seconds(3),
            backfill: false,
        }),
    };
    let r = store.signal(with_params.clone()).await.expect("run-now signal with params");
    expected.push((Some(r), Change::Signal(with_params)));
    store.delete(&a, Some(2)).await.expect("delete a").expect("a existed");
    expected.push((None, Change::Delete(a.clone())));
    let o2 = put_ok(store.put(sample_job(&b), Precondition::Absent).await, "create b");
    expected.push((Some(o2.revision), Change::Put(o2.job.clone())));
    let kill_all = Signal::Kill { job: b.clone(), run: None };
    let r = store.signal(kill_all.clone()).await.expect("kill signal");
    expected.push((Some(r), Change::Signal(kill_all)));
    store.delete(&b, None).await.expect("delete b").expect("b existed");
    expected.push((None, Change::Delete(b.clone())));
    put_ok(store.put(sample_job(&sentinel), Precondition::Absent).await, "sentinel");

    let check = |events: &[WatchEvent], expected: &[(Option<Revision>, Change)], what: &str| {
        let changes: Vec<&Change> = events.iter().map(|e| &e.change).collect();
        let wanted: Vec<&Change> = expected.iter().map(|(_, c)| c).collect();
        assert_eq!(changes, wanted, "{what}: every change once, in order");
        for pair in events.windows(2) {
            assert!(pair[0].revision < pair[1].revision, "{what}: revisions strictly increase");
        }
        for (event, (rev, _)) in events.iter().zip(expected) {
            assert!(event.revision >= from, "{what}: no event older than the watch start");
            if let Some(rev) = rev {
                assert_eq!(event.revision, *rev, "{what}: the event carries the write's revision");
            }
        }
    };
    let live = collect_until(&mut stream, &ours, &sentinel).await;
    check(&live, &expected, "live watch");
    drop(stream);

    let mut replay = store.watch(from).await.expect("watch from an old revision");
    let replayed = collect_until(&mut replay, &ours, &sentinel).await;
    check(&replayed, &expected, "replayed watch");
    drop(replay);

    let mut middle = store.watch(o2.revision).await.expect("watch from a middle revision");
    let tail = collect_until(&mut middle, &ours, &sentinel).await;
    check(&tail, &expected[5..], "watch from the middle");
    drop(middle);

    store.delete(&sentinel, None).await.expect("cleanup");
}

// ---------------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------------

/// join, heartbeat, live (sorted by id), leave; one adapter serves several worker ids.
pub async fn membership_suite(members: Arc<dyn Membership>) {
    let base = unique("worker");
    let (id_a, id_b) = (WorkerId(format!("{base}-a")), WorkerId(format!("{base}-b")));
    let ours = |live: &[WorkerInfo]| -> Vec<WorkerInfo> {
        live.iter().filter(|w| w.id == id_a || w.id == id_b).cloned().collect()
    };
    let sorted = |live: &[WorkerInfo]| live.windows(2).all(|p| p[0].id < p[1].id);

    let mut a = sample_worker(&id_a);
    let b = sample_worker(&id_b);
    members.join(&b).await.expect("join b");
    members.join(&a).await.expect("join a");
    let live = members.live().await.expect("live");
    assert!(sorted(&live), "live workers are sorted by id, without duplicates: {live:?}");
    assert_eq!(ours(&live), vec![a.clone(), b.clone()], "joined workers are live with their info");

    members.join(&a).await.expect("join again");
    assert_eq!(ours(&members.live().await.expect("live")).len(), 2, "joining twice lists a worker once");

    a.running = 3;
    a.last_heartbeat = ms(Utc::now());
    members.heartbeat(&a).await.expect("heartbeat");
    assert_eq!(ours(&members.live().await.expect("live")), vec![a.clone(), b.clone()], "a heartbeat updates the info");

    members.leave(&id_a).await.expect("leave a");
    let live = members.live().await.expect("live");
    assert!(sorted(&live));
    assert_eq!(ours(&live), vec![b.clone()], "a worker that left is not live");
    members.leave(&id_a).await.expect("leaving twice is not an error");
    members.leave(&id_b).await.expect("leave b");
    assert!(ours(&members.live().await.expect("live")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------------

/// Every claims check, in sequence, on one adapter.
pub async fn claims_suite(claims: Arc<dyn Claims>) {
    claims_tick_once(Arc::clone(&claims)).await;
    claims_tick_race(Arc::clone(&claims)).await;
    claims_request_once(Arc::clone(&claims)).await;
    claims_attempt_once(Arc::clone(&claims)).await;
    claims_tick_checked(Arc::clone(&claims)).await;
    claims_batches(Arc::clone(&claims)).await;
    claims_marks_with_claims(Arc::clone(&claims)).await;
    claims_running_marks(Arc::clone(&claims)).await;
    claims_alert_once(Arc::clone(&claims)).await;
    claims_alert_updates(claims).await;
}

/// A pending alert record of a fresh job, raised at `raised_at`.
pub fn sample_alert(job: &JobName, id: &str, raised_at: DateTime<Utc>) -> crate::domain::AlertRecord {
    let alert = crate::domain::Alert {
        id: id.to_owned(),
        job: Some(job.clone()),
        kind: crate::domain::AlertKind::Failed,
        message: format!("Job {job} failed."),
        raised_at,
        rule: Some(0),
        run: None,
        run_status: Some(RunStatus::Failed),
        scheduled_at: None,
        worker: None,
        consecutive: Some(1),
        last_success_at: None,
        channels: vec!["ops".into(), "pager".into()],
    };
    crate::domain::AlertRecord::new(alert, WorkerId(unique("alert-owner")))
}

/// Many tasks claiming the same alert: exactly one creates it; the record reads back as
/// written; other ids and jobs are independent.
pub async fn claims_alert_once(claims: Arc<dyn Claims>) {
    let job = unique_job("alert");
    let record = sample_alert(&job, "f0-none", ms(Utc::now()));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let claims = Arc::clone(&claims);
            let mut mine = record.clone();
            mine.owner = WorkerId(format!("racer-{i}"));
            tokio::spawn(async move { claims.claim_alert(&mine).await.map(|won| won.map(|_| mine.owner)) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(owner) = task.await.expect("racer task").expect("claim alert") {
            winners.push(owner);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of {RACERS} concurrent claims of one alert wins");
    let stored = claims.get_alert(job.as_str(), "f0-none").await.expect("get").expect("claimed alert is stored");
    assert_eq!(stored.record.owner, winners[0], "the stored record is the winner's");
    assert_eq!(stored.record.alert, record.alert);
    assert_eq!(claims.claim_alert(&record).await.expect("claim again"), None, "an alert is claimed once");
    assert!(claims.get_alert(job.as_str(), "f0-other").await.expect("get").is_none());
    let other = unique_job("alert-other");
    assert!(claims.claim_alert(&sample_alert(&other, "f0-none", ms(Utc::now()))).await.expect("claim").is_some());
    assert!(claims.claim_alert(&sample_alert(&job, "r0-none", ms(Utc::now()))).await.expect("claim").is_some());
}

/// Delivery records are compare-and-set on the revision; listing is per job and newest first;
/// purging removes records last changed before the cutoff only.
pub async fn claims_alert_updates(claims: Arc<dyn Claims>) {
    let job = unique_job("alert-upd");
    let t0 = ms(Utc::now()) - chrono::Duration::hours(2);
    let mut record = sample_alert(&job, "f0-a", t0);
    let rev = claims.claim_alert(&record).await.expect("claim").expect("won");
    record.deliveries[0].state = crate::domain::DeliveryState::Delivered;
    record.updated_at = t0 + chrono::Duration::seconds(1);
    let rev2 = claims.update_alert(&record, rev).await.expect("update").expect("current revision updates");
    assert_ne!(rev2, rev);
    assert_eq!(claims.update_alert(&record, rev).await.expect("update"), None, "a stale revision is refused");
    let stored = claims.get_alert(job.as_str(), "f0-a").await.expect("get").expect("stored");
    assert_eq!((stored.record.clone(), stored.revision), (record.clone(), rev2));
    let newer = sample_alert(&job, "l0-b", t0 + chrono::Duration::minutes(1));
    claims.claim_alert(&newer).await.expect("claim").expect("won");
    let listed: Vec<String> =
        claims.alerts(Some(job.as_str())).await.expect("list").into_iter().map(|a| a.record.alert.id).collect();
    assert_eq!(listed, ["l0-b", "f0-a"], "one job's alerts, newest first");
    let all = claims.alerts(None).await.expect("list all");
    assert!(all.iter().any(|a| a.record.alert.id == "f0-a" && a.record.alert.job.as_ref() == Some(&job)));
    assert!(all.windows(2).all(|w| w[0].record.alert.raised_at >= w[1].record.alert.raised_at), "newest first");
    let purged = claims.purge_alerts_before(t0 + chrono::Duration::seconds(30)).await.expect("purge");
    assert!(purged >= 1, "the old record is purged");
    let left: Vec<String> =
        claims.alerts(Some(job.as_str())).await.expect("list").into_iter().map(|a| a.record.alert.id).collect();
    assert_eq!(left, ["l0-b"], "newer records stay");
    claims_last_ticks(Arc::clone(&claims)).await;
    claims_running_marks(claims).await;
}

/// The last claimed tick of each job is listed (catch-up after downtime starts from it), at
/// the claim's millisecond precision, and a refused older claim does not lower it.
pub async fn claims_last_ticks(claims: Arc<dyn Claims>) {
    let job = unique_job("last");
    let t = whole_second(Utc::now());
    let sec = chrono::Duration::seconds(1);
    assert!(!claims.last_ticks().await.expect("list").contains_key(&job), "a job never claimed has none");
    claims.claim_tick(&job, t).await.expect("claim").expect("won");
    claims.claim_tick(&job, t + sec).await.expect("claim").expect("won");
    assert_eq!(claims.claim_tick(&job, t).await.expect("claim"), None);
    assert_eq!(claims.last_ticks().await.expect("list").get(&job), Some(&(t + sec)));
}

/// The last claimed tick survives closing and opening the store again (`reopen` opens a new
/// instance on the same storage): a tick at or before it is still refused.
pub async fn last_ticks_survive_reopen<F, Fut>(reopen: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Claims>>,
{
    let job = unique_job("reopen");
    let t = whole_second(Utc::now());
    {
        let first = reopen().await;
        first.claim_tick(&job, t).await.expect("claim").expect("won");
    }
    let second = reopen().await;
    assert_eq!(second.last_ticks().await.expect("list").get(&job), Some(&t), "the last tick is durable");
    assert_eq!(second.claim_tick(&job, t).await.expect("claim"), None, "a claimed tick stays claimed");
    assert!(second.claim_tick(&job, t + chrono::Duration::seconds(1)).await.expect("claim").is_some());
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("time in range")
}

/// A tick is claimed once; an older or equal tick is refused after a newer one; fences grow;
/// jobs are independent.
pub async fn claims_tick_once(claims: Arc<dyn Claims>) {
    let (job, other) = (unique_job("tick"), unique_job("tick-other"));
    let t = whole_second(Utc::now());
    let sec = chrono::Duration::seconds(1);
    let f1 = claims.claim_tick(&job, t).await.expect("claim").expect("a fresh tick is claimed");
    assert_eq!(claims.claim_tick(&job, t).await.expect("claim"), None, "a tick is claimed once");
    assert_eq!(claims.claim_tick(&job, t - sec).await.expect("claim"), None, "an older tick is refused");
    let f2 = claims.claim_tick(&job, t + sec).await.expect("claim").expect("a newer tick is claimed");
    assert!(f2 > f1, "fences increase: {f1:?} then {f2:?}");
    assert_eq!(claims.claim_tick(&job, t + sec).await.expect("claim"), None, "an equal tick is refused");
    assert_eq!(claims.claim_tick(&job, t).await.expect("claim"), None, "an older tick stays refused");
    assert!(claims.claim_tick(&other, t).await.expect("claim").is_some(), "another job's claims are independent");
}

/// Many tasks claiming the same tick: exactly one wins, each time.
pub async fn claims_tick_race(claims: Arc<dyn Claims>) {
    let job = unique_job("tick-race");
    let t0 = whole_second(Utc::now());
    for round in 0..5 {
        let tick = t0 + chrono::Duration::seconds(round);
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| {
                let claims = Arc::clone(&claims);
                let job = job.clone();
                tokio::spawn(async move { claims.claim_tick(&job, tick).await })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            if task.await.expect("racer task").expect("claim").is_some() {
                won += 1;
            }
        }
        assert_eq!(won, 1, "exactly one of {RACERS} concurrent claims of tick {tick} wins");
    }
}

/// `claim_tick_checked` claims like `claim_tick`, brings the job's live runs when asked (none
/// otherwise) and, when it knows one, the tick claimed before.
pub async fn claims_tick_checked(claims: Arc<dyn Claims>) {
    let job = unique_job("checked");
    let t = whole_second(Utc::now());
    let sec = chrono::Duration::seconds(1);
    let first = claims.claim_tick_checked(&job, t, true).await.expect("claim").expect("a fresh tick is claimed");
    assert_eq!((first.previous, first.running.len()), (None, 0), "nothing was claimed or running before");
    let now = ms(Utc::now());
    let mark = RunningMark {
        job: job.clone(),
        run: RunId::generate(),
        worker: WorkerId(unique("w")),
        scheduled_at: t,
        since: now,
        fence: Some(first.fence),
        trigger: Some(Trigger::Schedule),
    };
    claims.mark_running(&mark).await.expect("mark");
    let second = claims.claim_tick_checked(&job, t + sec, true).await.expect("claim").expect("a newer tick is claimed");
    assert_eq!(second.running, vec![mark.clone()], "the live runs come with the claim");
    assert!(
        second.previous.is_none() || second.previous == Some(t),
        "the previous tick, when known: {:?}",
        second.previous
    );
    assert!(second.fence > first.fence, "fences increase");
    let third = claims.claim_tick_checked(&job, t + sec * 2, false).await.expect("claim").expect("claimed");
    assert!(third.running.is_empty(), "live runs only when asked");
    assert_eq!(claims.claim_tick_checked(&job, t + sec, true).await.expect("claim"), None, "an older tick is refused");
    claims.clear_running(&job, &mark.run).await.expect("clear");
}

/// Batches: each claim of `claim_ticks` is decided on its own, in order, and batches of many
/// claims race like single ones; marks are put and cleared in batches.
pub async fn claims_batches(claims: Arc<dyn Claims>) {
    let t = whole_second(Utc::now());
    let sec = chrono::Duration::seconds(1);
    let jobs: Vec<JobName> = (0..120).map(|_| unique_job("batch")).collect();
    claims.claim_tick(&jobs[1], t + sec).await.expect("claim").expect("won");
    let requests: Vec<TickRequest> = jobs.iter().map(|job| TickRequest::unmarked(job.clone(), t, true)).collect();
    let results = claims.claim_ticks(&requests).await;
    assert_eq!(results.len(), requests.len(), "one answer per request");
    for (i, result) in results.iter().enumerate() {
        let won = result.as_ref().expect("batched claim").is_some();
        assert_eq!(won, i != 1, "claim {i}: a job with a later claimed tick refuses, the others win");
    }
    let again = claims.claim_ticks(&requests).await;
    assert!(again.iter().all(|r| matches!(r, Ok(None))), "a batch claims each tick once");

    let racers: Vec<_> = (0..4)
        .map(|_| {
            let claims = Arc::clone(&claims);
            let requests: Vec<TickRequest> =
                jobs.iter().map(|job| TickRequest::unmarked(job.clone(), t + sec * 5, false)).collect();
            tokio::spawn(async move { claims.claim_ticks(&requests).await })
        })
        .collect();
    let mut wins = vec![0usize; jobs.len()];
    for task in racers {
        for (i, r) in task.await.expect("racer").into_iter().enumerate() {
            if r.expect("batched claim").is_some() {
                wins[i] += 1;
            }
        }
    }
    assert!(wins.iter().all(|w| *w == 1), "racing batches: every tick won exactly once: {wins:?}");

    let worker = WorkerId(unique("batch-worker"));
    let marks: Vec<RunningMark> = jobs
        .iter()
        .take(110)
        .map(|job| RunningMark {
            job: job.clone(),
            run: RunId::generate(),
            worker: worker.clone(),
            scheduled_at: t,
            since: t,
            fence: Some(Fence(1)),
            trigger: None,
        })
        .collect();
    claims.mark_running_many(&marks).await.expect("marks");
    let listed = claims.running(None).await.expect("running");
    assert_eq!(listed.iter().filter(|m| m.worker == worker).count(), 110, "every mark of a batch is published");
    let runs: Vec<(JobName, RunId)> = marks.iter().map(|m| (m.job.clone(), m.run.clone())).collect();
    claims.clear_running_many(&runs).await.expect("clear");
    let listed = claims.running(None).await.expect("running");
    assert!(listed.iter().all(|m| m.worker != worker), "every mark of a batch is cleared");
}

/// A won claim writes its run's mark in the same transaction (the mark reads back with the
/// claim's fence); under `mark_if_idle` only when the job has no live run; a refused claim
/// writes nothing; a retried claim with the same mark, after its first attempt won, answers as
/// won with the same fence; batches of marked claims beyond one etcd txn mark every claim.
pub async fn claims_marks_with_claims(claims: Arc<dyn Claims>) {
    let job = unique_job("marked");
    let worker = WorkerId(unique("marked-worker"));
    let t = whole_second(Utc::now());
    let sec = chrono::Duration::seconds(1);
    let mark_for = |job: &JobName, tick: DateTime<Utc>| RunningMark {
        job: job.clone(),
        run: RunId::generate(),
        worker: worker.clone(),
        scheduled_at: tick,
        since: ms(Utc::now()),
        fence: None,
        trigger: Some(Trigger::Schedule),
    };
    let request = |mark: &RunningMark, if_idle: bool| TickRequest {
        job: mark.job.clone(),
        tick: mark.scheduled_at,
        with_running: true,
        mark: Some(mark.clone()),
        mark_if_idle: if_idle,
    };
    let one = |claims: Arc<dyn Claims>, r: TickRequest| async move {
        claims.claim_ticks(&[r]).await.pop().expect("one answer").expect("claim")
    };

    // A won claim under `allow`: marked, the mark lists with the claim's fence.
    let first = mark_for(&job, t);
    let won = one(Arc::clone(&claims), request(&first, false)).await.expect("a fresh tick is claimed");
    assert!(won.marked, "the mark goes with the claim");
    assert!(won.running.is_empty(), "the live runs are read before this claim's own mark");
    let listed = claims.running(Some(&job)).await.expect("running");
    let expected = RunningMark { fence: Some(won.fence), ..first.clone() };
    assert_eq!(listed, vec![expected], "the mark is listed with the claim's fence");

    // A retry with the same mark (first answer lost): won, same fence, still one mark.
    let again = one(Arc::clone(&claims), request(&first, false)).await.expect("a retried claim that won stays won");
    assert_eq!((again.fence, again.marked), (won.fence, true));
    assert_eq!(claims.running(Some(&job)).await.expect("running").len(), 1);

    // Another worker's claim of the same tick: refused, and its mark is not written.
    let rival = mark_for(&job, t);
    assert_eq!(one(Arc::clone(&claims), request(&rival, false)).await, None, "a tick is claimed once");
    assert_eq!(claims.running(Some(&job)).await.expect("running").len(), 1, "a refused claim writes no mark");

    // `mark_if_idle` with a live run: won (the tick is accounted for) but not marked.
    let busy = mark_for(&job, t + sec);
    let skipped = one(Arc::clone(&claims), request(&busy, true)).await.expect("the next tick is claimed");
    assert!(!skipped.marked, "a tick to skip leaves no mark");
    assert_eq!(skipped.running.iter().map(|m| m.run.clone()).collect::<Vec<_>>(), vec![first.run.clone()]);
    assert!(skipped.fence > won.fence, "fences increase");
    claims.clear_running(&job, &first.run).await.expect("clear");

    // `mark_if_idle` once idle: marked.
    let idle = mark_for(&job, t + sec * 2);
    let ran = one(Arc::clone(&claims), request(&idle, true)).await.expect("claimed");
    assert!(ran.marked && ran.running.is_empty(), "an idle job's tick is marked: {ran:?}");
    claims.clear_running(&job, &idle.run).await.expect("clear");

    // A batch of marked claims larger than one etcd txn (48 claims): every claim marked.
    let jobs: Vec<JobName> = (0..60).map(|_| unique_job("marked-batch")).collect();
    let marks: Vec<RunningMark> = jobs.iter().map(|j| mark_for(j, t)).collect();
    let requests: Vec<TickRequest> = marks.iter().map(|m| request(m, true)).collect();
    let results = claims.claim_ticks(&requests).await;
    let listed = claims.running(None).await.expect("running");
    for (mark, result) in marks.iter().zip(results) {
        let claim = result.expect("batched claim").expect("won");
        assert!(claim.marked, "every claim of the batch is marked");
        let stored: Vec<&RunningMark> = listed.iter().filter(|m| m.run == mark.run).collect();
        assert_eq!(stored.len(), 1, "the mark of {} is listed once", mark.job);
        assert_eq!(stored[0].fence, Some(claim.fence), "a batched mark carries its claim's fence");
    }
    let runs: Vec<(JobName, RunId)> = marks.iter().map(|m| (m.job.clone(), m.run.clone())).collect();
    claims.clear_running_many(&runs).await.expect("clear");
}

/// A run-now request is claimed once per id, also under a race.
pub async fn claims_request_once(claims: Arc<dyn Claims>) {
    let job = unique_job("request");
    let (r1, r2, r3) = (unique("r1"), unique("r2"), unique("r3"));
    assert!(claims.claim_request(&job, &r1).await.expect("claim").is_some());
    assert_eq!(claims.claim_request(&job, &r1).await.expect("claim"), None, "a request is claimed once");
    assert!(claims.claim_request(&job, &r2).await.expect("claim").is_some(), "another request id is claimed");
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let claims = Arc::clone(&claims);
            let (job, r3) = (job.clone(), r3.clone());
            tokio::spawn(async move { claims.claim_request(&job, &r3).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        if task.await.expect("racer task").expect("claim").is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one of {RACERS} concurrent claims of a request wins");
}

/// A retry attempt is claimed once per (job, tick, attempt), also under a race, and whatever the
/// job's tick high-water mark says.
pub async fn claims_attempt_once(claims: Arc<dyn Claims>) {
    let (job, other) = (unique_job("attempt"), unique_job("attempt-other"));
    let tick = whole_second(Utc::now());
    let next = tick + chrono::Duration::seconds(10);
    // The next tick is already claimed: attempts of the earlier one stay claimable.
    assert!(claims.claim_tick(&job, next).await.expect("claim tick").is_some());
    assert!(claims.claim_attempt(&job, tick, 2).await.expect("claim").is_some(), "attempt 2 of an older tick");
    assert_eq!(claims.claim_attempt(&job, tick, 2).await.expect("claim"), None, "an attempt is claimed once");
    assert!(claims.claim_attempt(&job, tick, 3).await.expect("claim").is_some(), "attempt 3 is its own claim");
    assert!(claims.claim_attempt(&job, next, 2).await.expect("claim").is_some(), "another tick's attempt");
    assert!(claims.claim_attempt(&other, tick, 2).await.expect("claim").is_some(), "jobs are independent");
    assert!(claims.claim_tick(&job, next + chrono::Duration::seconds(10)).await.expect("tick").is_some());
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let claims = Arc::clone(&claims);
            let job = job.clone();
            tokio::spawn(async move { claims.claim_attempt(&job, tick, 4).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        if task.await.expect("racer task").expect("claim").is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one of {RACERS} concurrent claims of an attempt wins");
}

/// Running marks: add, list per job and overall, clear (also when absent).
pub async fn claims_running_marks(claims: Arc<dyn Claims>) {
    let (a, b, none) = (unique_job("mark-a"), unique_job("mark-b"), unique_job("mark-none"));
    let worker = WorkerId(unique("mark-worker"));
    let now = ms(Utc::now());
    let mark = |job: &JobName| RunningMark {
        job: job.clone(),
        run: RunId::generate(),
        worker: worker.clone(),
        scheduled_at: now,
        since: now,
        fence: Some(Fence(3)),
        trigger: Some(Trigger::Manual),
    };
    let (a1, a2, b1) = (mark(&a), mark(&a), mark(&b));
    for m in [&a1, &a2, &b1] {
        claims.mark_running(m).await.expect("mark");
    }
    let by_run = |mut v: Vec<RunningMark>| {
        v.sort_by(|x, y| x.run.cmp(&y.run));
        v
    };
    assert_eq!(by_run(claims.running(Some(&a)).await.expect("running")), by_run(vec![a1.clone(), a2.clone()]));
    assert_eq!(claims.running(Some(&b)).await.expect("running"), vec![b1.clone()]);
    assert!(claims.running(Some(&none)).await.expect("running").is_empty());
    let all = claims.running(None).await.expect("running");
    for m in [&a1, &a2, &b1] {
        assert_eq!(all.iter().filter(|x| *x == m).count(), 1, "every mark is listed once overall: {m:?}");
    }

    claims.clear_running(&a, &a1.run).await.expect("clear");
    assert_eq!(claims.running(Some(&a)).await.expect("running"), vec![a2.clone()]);
    claims.clear_running(&a, &a1.run).await.expect("clearing an absent mark is not an error");
    claims.clear_running(&a, &a2.run).await.expect("clear");
    claims.clear_running(&b, &b1.run).await.expect("clear");
    let all = claims.running(None).await.expect("running");
    assert!(all.iter().all(|m| m.job != a && m.job != b), "cleared marks are gone");
}

// ---------------------------------------------------------------------------------------------
// Log store
// ---------------------------------------------------------------------------------------------

/// Every log store check, in sequence, on one store.
pub async fn log_store_suite(logs: Arc<dyn LogStore>) {
    logs.ping().await.expect("ping");
    log_store_append_is_idempotent(Arc::clone(&logs)).await;
    log_store_running_becomes_final(Arc::clone(&logs)).await;
    log_store_filters(Arc::clone(&logs)).await;
    log_store_pagination(Arc::clone(&logs)).await;
    log_store_stats(Arc::clone(&logs)).await;
    log_store_outputs_apart(Arc::clone(&logs)).await;
    log_store_output_budget(Arc::clone(&logs)).await;
    log_store_last_runs(Arc::clone(&logs)).await;
    log_store_charts(Arc::clone(&logs)).await;
    log_store_purge(Arc::clone(&logs)).await;
    log_store_retention(logs).await;
}

fn job_filter(job: &JobName) -> RunFilter {
    RunFilter { job: Some(job.clone()), ..RunFilter::default() }
}

/// Newest start first, then id descending: the order every page follows.
fn page_order(records: &mut [RunRecord]) {
    records.sort_by(|x, y| y.start_time().cmp(&x.start_time()).then_with(|| y.id.cmp(&x.id)));
}

/// `runs` as listings return them (no output).
fn summaries(runs: &[RunRecord]) -> Vec<RunRecord> {
    runs.iter().map(summary).collect()
}

/// Appending the same batch twice stores each run once, unchanged.
pub async fn log_store_append_is_idempotent(logs: Arc<dyn LogStore>) {
    let job = unique_job("append");
    let base = Utc::now() - chrono::Duration::hours(1);
    let records: Vec<RunRecord> = (0..5)
        .map(|i| sample_run(&job, RunStatus::Succeeded, "w", base + chrono::Duration::seconds(i), Some(10)))
        .collect();
    logs.append_batch(&records).await.expect("append");
    assert_eq!(logs.count(&job_filter(&job)).await.expect("count"), 5);
    logs.append_batch(&records).await.expect("append again");
    assert_eq!(logs.count(&job_filter(&job)).await.expect("count"), 5, "a retried batch duplicates nothing");
    for r in &records {
        assert_eq!(logs.get(&r.id).await.expect("get").as_ref(), Some(r), "a stored run reads back unchanged");
    }
    assert_eq!(logs.get(&RunId(unique("missing"))).await.expect("get"), None);
    logs.append_batch(&[]).await.expect("an empty batch is fine");
}

/// A `running` record and its final record are one run; within a batch the last one wins; a
/// late retry of the `running` record does not resurrect a finished run.
pub async fn log_store_running_becomes_final(logs: Arc<dyn LogStore>) {
    let job = unique_job("upsert");
    let start = Utc::now() - chrono::Duration::minutes(30);
    let running = sample_run(&job, RunStatus::Running, "w", start, None);
    logs.append_batch(std::slice::from_ref(&running)).await.expect("append running");
    let running_filter = RunFilter { status: Some(RunStatus::Running), ..job_filter(&job) };
    assert_eq!(logs.count(&running_filter).await.expect("count"), 1);

    let mut done = running.clone();
    done.status = RunStatus::Succeeded;
    done.ended_at = Some(ms(start) + chrono::Duration::milliseconds(250));
    done.duration_ms = Some(250);
    done.exit_code = Some(0);
    logs.append_batch(std::slice::from_ref(&done)).await.expect("append final");
    assert_eq!(logs.count(&job_filter(&job)).await.expect("count"), 1, "running then final is one run");
    assert_eq!(logs.count(&running_filter).await.expect("count"), 0, "no run is left running");
    assert_eq!(logs.get(&done.id).await.expect("get"), Some(done.clone()));

    let second = sample_run(&job, RunStatus::Running, "w", start + chrono::Duration::seconds(1), None);
    let mut second_done = second.clone();
    second_done.status = RunStatus::Failed;
    second_done.exit_code = Some(2);
    logs.append_batch(&[second, second_done.clone()]).await.expect("append both in one batch");
    assert_eq!(logs.get(&second_done.id).await.expect("get"), Some(second_done), "records apply in slice order");
    assert_eq!(logs.count(&job_filter(&job)).await.expect("count"), 2);

    logs.append_batch(std::slice::from_ref(&running)).await.expect("late retry of the running record");
    assert_eq!(logs.get(&done.id).await.expect("get"), Some(done), "a final run never goes back to running");
}

/// Filters by job, status, worker and start-time window (from inclusive, to exclusive), alone
/// and combined, in `query` and `count`.
pub async fn log_store_filters(logs: Arc<dyn LogStore>) {
    let (job, other) = (unique_job("filter"), unique_job("filter-other"));
    let (wa, wb) = (unique("wa"), unique("wb"));
    let t0 = ms(Utc::now() - chrono::Duration::hours(3));
    let at = |m: i64| t0 + chrono::Duration::minutes(m);
    let mut mine = vec![
        sample_run(&job, RunStatus::Succeeded, &wa, at(0), Some(10)),
        sample_run(&job, RunStatus::Succeeded, &wa, at(1), Some(10)),
        sample_run(&job, RunStatus::Succeeded, &wa, at(2), Some(10)),
        sample_run(&job, RunStatus::Failed, &wb, at(3), Some(10)),
        sample_run(&job, RunStatus::Failed, &wb, at(4), Some(10)),
        sample_run(&job, RunStatus::Running, &wa, at(5), None),
    ];
    let theirs = vec![
        sample_run(&other, RunStatus::Succeeded, &wa, at(1), Some(10)),
        sample_run(&other, RunStatus::Failed, &wb, at(2), Some(10)),
    ];
    logs.append_batch(&theirs).await.expect("append");
    logs.append_batch(&mine).await.expect("append");
    page_order(&mut mine);

    let count = |filter: RunFilter| {
        let logs = Arc::clone(&logs);
        async move { logs.count(&filter).await.expect("count") }
    };
    let query = |filter: RunFilter| {
        let logs = Arc::clone(&logs);
        async move {
            let page = logs.query(&RunQuery { filter, limit: 100, ..RunQuery::default() }).await.expect("query");
            page.runs
        }
    };
    let by_job = job_filter(&job);
    assert_eq!(count(by_job.clone()).await, 6);
    assert_eq!(query(by_job.clone()).await, summaries(&mine), "a job's runs, newest first, unchanged but for output");
    assert_eq!(count(job_filter(&other)).await, 2);

    let succeeded = RunFilter { status: Some(RunStatus::Succeeded), ..by_job.clone() };
    assert_eq!(count(succeeded.clone()).await, 3);
    let runs = query(succeeded).await;
    assert_eq!(
        runs.iter().map(|r| (r.status, r.start_time())).collect::<Vec<_>>(),
        vec![(RunStatus::Succeeded, at(2)), (RunStatus::Succeeded, at(1)), (RunStatus::Succeeded, at(0)),]
    );

    let on_wb = RunFilter { worker: Some(WorkerId(wb.clone())), ..by_job.clone() };
    assert_eq!(count(on_wb.clone()).await, 2);
    assert!(query(on_wb).await.iter().all(|r| r.worker.0 == wb && r.job == job));
    let wb_anywhere = RunFilter { worker: Some(WorkerId(wb.clone())), ..RunFilter::default() };
    assert_eq!(count(wb_anywhere).await, 3, "the worker filter alone spans jobs");

    let window = RunFilter { from: Some(at(1)), to: Some(at(4)), ..by_job.clone() };
    assert_eq!(count(window.clone()).await, 3, "from is inclusive, to exclusive");
    assert_eq!(query(window).await.iter().map(RunRecord::start_time).collect::<Vec<_>>(), vec![at(3), at(2), at(1)]);
    let combined = RunFilter {
        status: Some(RunStatus::Failed),
        worker: Some(WorkerId(wb.clone())),
        from: Some(at(4)),
        ..by_job.clone()
    };
    assert_eq!(count(combined.clone()).await, 1);
    assert_eq!(query(combined).await, vec![summary(&mine[1])]);
    let running = RunFilter { status: Some(RunStatus::Running), ..by_job };
    assert_eq!(query(running).await, vec![summary(&mine[0])]);
}

/// Cursor pagination over 250 runs (some sharing a start time) yields each exactly once, in
/// order, while newer runs are appended between pages; skip/limit pages; limit is clamped.
pub async fn log_store_pagination(logs: Arc<dyn LogStore>) {
    const TOTAL: usize = 250;
    const PAGE: u32 = 40;
    let job = unique_job("page");
    let base = ms(Utc::now() - chrono::Duration::days(2));
    let statuses = [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Skipped, RunStatus::Timeout];
    let mut records: Vec<RunRecord> = (0..TOTAL)
        .map(|i| {
            // Three runs share each start time: the id breaks the tie.
            let start = base + chrono::Duration::seconds((i / 3) as i64);
            sample_run(&job, statuses[i % statuses.len()], "w", start, Some(i as u64))
        })
        .collect();
    for chunk in records.chunks(50).rev() {
        logs.append_batch(chunk).await.expect("append");
    }
    page_order(&mut records);
    let records = summaries(&records);
    let old = RunFilter { to: Some(base + chrono::Duration::days(1)), ..job_filter(&job) };
    assert_eq!(logs.count(&old).await.expect("count"), TOTAL as u64);

    let mut seen: Vec<RunRecord> = Vec::new();
    let mut after: Option<RunCursor> = None;
    let mut pages = 0;
    loop {
        let query = RunQuery { filter: job_filter(&job), after: after.clone(), skip: 0, limit: PAGE };
        let page = logs.query(&query).await.expect("query");
        pages += 1;
        assert!(pages <= TOTAL, "pagination does not terminate");
        assert!(page.runs.len() <= PAGE as usize);
        if page.runs.len() == PAGE as usize {
            assert!(page.next_cursor.is_some(), "a full page has a next cursor");
        } else {
            assert_eq!(page.next_cursor, None, "a short page is the last");
        }
        seen.extend(page.runs);
        // Newer runs arriving between pages must not shift the pages still to come.
        let newer: Vec<RunRecord> = (0..2)
            .map(|i| sample_run(&job, RunStatus::Succeeded, "w", Utc::now() + chrono::Duration::seconds(i), Some(1)))
            .collect();
        logs.append_batch(&newer).await.expect("append between pages");
        match page.next_cursor {
            Some(text) => after = Some(RunCursor::decode(&text).expect("next_cursor decodes")),
            None => break,
        }
    }
    assert_eq!(seen.len(), TOTAL, "every run once");
    assert_eq!(seen, records, "every run exactly once, newest first, ties by id descending");

    let skipped =
        logs.query(&RunQuery { filter: old.clone(), after: None, skip: 10, limit: 5 }).await.expect("skip/limit query");
    assert_eq!(skipped.runs, records[10..15].to_vec(), "skip then limit");
    assert!(skipped.next_cursor.is_some());
    let cursor = RunCursor { start_time: records[19].start_time(), id: records[19].id.clone() };
    let both = logs
        .query(&RunQuery { filter: old.clone(), after: Some(cursor), skip: 5, limit: 5 })
        .await
        .expect("cursor+skip query");
    assert_eq!(both.runs, records[25..30].to_vec(), "skip applies after the cursor");
    let tail = logs
        .query(&RunQuery { filter: old.clone(), after: None, skip: (TOTAL - 3) as u64, limit: 10 })
        .await
        .expect("tail query");
    assert_eq!(tail.runs, records[TOTAL - 3..].to_vec());
    assert_eq!(tail.next_cursor, None);
    let clamped = logs.query(&RunQuery { filter: old, after: None, skip: 0, limit: 0 }).await.expect("limit 0");
    assert_eq!(clamped.runs.len(), 1, "limit is clamped to at least 1");
}

/// Stats over a window: counts by outcome, nearest-rank p50/p95 of durations, last success and
/// failure; running runs and runs before the window are left out.
pub async fn log_store_stats(logs: Arc<dyn LogStore>) {
    let job = unique_job("stats");
    let base = ms(Utc::now() - chrono::Duration::hours(6));
    let at = |m: i64| base + chrono::Duration::minutes(m);
    let records = vec![
        sample_run(&job, RunStatus::Succeeded, "w", at(-1), Some(10_000)),
        sample_run(&job, RunStatus::Succeeded, "w", at(1), Some(100)),
        sample_run(&job, RunStatus::Succeeded, "w", at(2), Some(300)),
        sample_run(&job, RunStatus::Succeeded, "w", at(3), Some(200)),
        sample_run(&job, RunStatus::Failed, "w", at(4), Some(400)),
        sample_run(&job, RunStatus::Timeout, "w", at(5), Some(600)),
        sample_run(&job, RunStatus::Killed, "w", at(6), Some(500)),
        sample_run(&job, RunStatus::Error, "w", at(7), None),
        sample_run(&job, RunStatus::Lost, "w", at(8), None),
        sample_run(&job, RunStatus::Skipped, "w", at(9), None),
        sample_run(&job, RunStatus::Missed, "w", at(10), None),
        sample_run(&job, RunStatus::Running, "w", at(11), None),
    ];
    logs.append_batch(&records).await.expect("append");
    let stats = logs.stats(&job, base).await.expect("stats");
    assert_eq!(
        stats,
        JobStats {
            runs: 10,
            succeeded: 3,
            failed: 5,
            p50_ms: Some(300),
            p95_ms: Some(600),
            last_success: Some(at(3)),
            last_failure: Some(at(8)),
        }
    );
    let empty = logs.stats(&unique_job("stats-none"), base).await.expect("stats");
    assert_eq!(empty, JobStats::default(), "a job without runs has zero figures");
}

/// Outputs are stored apart: listings return every field but the output (`output_bytes` kept),
/// `get` the whole run, `read_output` a prefix cut on a character boundary and the stored size;
/// a final record replaces the output, a late `running` retry does not clear it.
pub async fn log_store_outputs_apart(logs: Arc<dyn LogStore>) {
    let job = unique_job("outputs");
    let start = ms(Utc::now() - chrono::Duration::minutes(20));
    let mut big = sample_run(&job, RunStatus::Running, "w", start, None);
    big.output = String::new();
    big.output_bytes = 0;
    logs.append_batch(std::slice::from_ref(&big)).await.expect("append running");
    let running = big.clone();
    big.status = RunStatus::Succeeded;
    big.ended_at = Some(start + chrono::Duration::seconds(1));
    big.duration_ms = Some(1000);
    big.exit_code = Some(0);
    big.output = "é".repeat(100_000) + "END";
    big.output_bytes = big.output.len() as u64;
    let mut quiet = sample_run(&job, RunStatus::Succeeded, "w", start + chrono::Duration::seconds(5), Some(1));
    quiet.output = String::new();
    quiet.output_bytes = 0;
    logs.append_batch(&[big.clone(), quiet.clone()]).await.expect("append final");

    let page =
        logs.query(&RunQuery { filter: job_filter(&job), limit: 10, ..RunQuery::default() }).await.expect("query");
    assert_eq!(page.runs, vec![summary(&quiet), summary(&big)], "summaries: no output, output_bytes kept");
    assert_eq!(page.runs[1].output_bytes, 200_003);
    assert!(logs.get(&big.id).await.expect("get") == Some(big.clone()), "get returns the whole run");
    assert_eq!(logs.get(&quiet.id).await.expect("get"), Some(quiet.clone()));

    let (head, stored) = logs.read_output(&big.id, 1001).await.expect("read").expect("known run");
    assert_eq!((head.len(), stored), (1000, 200_003), "cut back to a character boundary");
    assert!(head.chars().all(|c| c == 'é'));
    let (whole, _) = logs.read_output(&big.id, usize::MAX).await.expect("read").expect("known run");
    assert!(whole == big.output, "the whole output reads back ({} of {} bytes)", whole.len(), big.output.len());
    assert_eq!(logs.read_output(&quiet.id, 10).await.expect("read"), Some((String::new(), 0)));
    assert_eq!(logs.read_output(&RunId(unique("missing")), 10).await.expect("read"), None);

    logs.append_batch(std::slice::from_ref(&running)).await.expect("late retry of the running record");
    assert!(logs.get(&big.id).await.expect("get") == Some(big), "the output survives a late running record");
}

/// `query_with_output` fills outputs in page order within its byte budget: the run that
/// crosses it is cut and marked, later ones carry only the marker; all stay in the page.
pub async fn log_store_output_budget(logs: Arc<dyn LogStore>) {
    let job = unique_job("budget");
    let base = ms(Utc::now() - chrono::Duration::minutes(10));
    let mut runs: Vec<RunRecord> = (0..4)
        .map(|i| {
            let mut r = sample_run(&job, RunStatus::Succeeded, "w", base + chrono::Duration::seconds(i), Some(1));
            r.output = format!("{i}").repeat(1000);
            r.output_bytes = 1000;
            r
        })
        .collect();
    logs.append_batch(&runs).await.expect("append");
    page_order(&mut runs);
    let query = RunQuery { filter: job_filter(&job), limit: 10, ..RunQuery::default() };

    let all = logs.query_with_output(&query, 10_000).await.expect("query with output");
    assert_eq!(all.runs, runs, "within the budget every run is whole");

    let page = logs.query_with_output(&query, 1500).await.expect("query with output");
    assert_eq!(page.runs.len(), 4, "the budget cuts outputs, never runs");
    assert_eq!(page.runs[0], runs[0], "the first output fits");
    assert_eq!(page.runs[1].output, "2".repeat(500) + &budget_marker(500), "the second is cut where the budget ends");
    assert!(page.runs[1].output_truncated);
    for (got, want) in page.runs[2..].iter().zip(&runs[2..]) {
        assert_eq!(got.output, budget_marker(1000), "past the budget only the marker");
        assert!(got.output_truncated);
        assert_eq!(RunRecord { output: want.output.clone(), output_truncated: false, ..got.clone() }, *want);
    }
}

/// `last_runs` returns the newest run (start time, then id) of each asked job that has one,
/// as a summary, however many jobs are asked for; jobs without runs are absent.
pub async fn log_store_last_runs(logs: Arc<dyn LogStore>) {
    let base = ms(Utc::now() - chrono::Duration::hours(2));
    let jobs: Vec<JobName> = (0..30).map(|i| unique_job(&format!("last{i}"))).collect();
    let mut newest = std::collections::HashMap::new();
    let mut batch = Vec::new();
    for (i, job) in jobs.iter().enumerate().skip(1) {
        let runs: Vec<RunRecord> = (0..=(i % 4) as i64)
            .map(|k| {
                let status = if k % 2 == 0 { RunStatus::Succeeded } else { RunStatus::Failed };
                sample_run(job, status, "w", base + chrono::Duration::minutes(k), Some(10))
            })
            .collect();
        let mut last = runs.last().cloned().expect("at least one run");
        if i % 5 == 0 {
            // Same start time as the newest: the larger id wins, as in pages.
            let mut tie = sample_run(job, RunStatus::Running, "w", last.start_time(), None);
            tie.output = "still going".into();
            if tie.id > last.id {
                last = tie.clone();
            }
            batch.push(tie);
        }
        newest.insert(job.clone(), summary(&last));
        batch.extend(runs);
    }
    logs.append_batch(&batch).await.expect("append");
    let found = logs.last_runs(&jobs).await.expect("last runs");
    assert_eq!(found.len(), jobs.len() - 1, "a job without runs is absent");
    assert!(!found.contains_key(&jobs[0]));
    for (job, want) in &newest {
        assert_eq!(found.get(job), Some(want), "newest run of {job}, as a summary");
    }
    assert!(logs.last_runs(&[]).await.expect("no jobs").is_empty());
    let one = logs.last_runs(&jobs[3..4]).await.expect("one job");
    assert_eq!(one.get(&jobs[3]), newest.get(&jobs[3]));
}

/// The chart reads (README "Pictures"): `run_buckets` counts runs per status and ranks
/// durations (nearest rank) per start-time bucket; `run_points` returns a job's runs of a
/// window, newest first, attempts of one tick sharing `scheduled_at`, with a `missed`
/// summary's last tick; `recent_runs` the newest N per job in one call; `runs_per_worker`
/// counts the runs that ran since a time.
pub async fn log_store_charts(logs: Arc<dyn LogStore>) {
    use crate::backend::logs::RunPoint;
    let job = unique_job("charts");
    let base = ms(Utc::now() - chrono::Duration::hours(3)).duration_trunc(chrono::Duration::hours(1)).expect("trunc");
    let worker = unique("chartw");
    let mut batch = Vec::new();
    // Bucket 0 (first hour): durations 1..=20 ms succeeded, plus a failure without duration.
    for i in 1..=20u64 {
        batch.push(sample_run(
            &job,
            RunStatus::Succeeded,
            &worker,
            base + chrono::Duration::minutes(i as i64),
            Some(i),
        ));
    }
    batch.push(sample_run(&job, RunStatus::Missed, &worker, base + chrono::Duration::minutes(30), None));
    // Bucket 2: one failed run of 500 ms and a running one.
    let second = base + chrono::Duration::hours(2);
    batch.push(sample_run(&job, RunStatus::Failed, &worker, second, Some(500)));
    let mut retry = sample_run(&job, RunStatus::Running, &worker, second + chrono::Duration::seconds(5), None);
    retry.scheduled_at = second;
    retry.attempt = 2;
    retry.trigger = Trigger::Retry;
    batch.push(retry.clone());
    let mut missed = sample_run(&job, RunStatus::Missed, &worker, second + chrono::Duration::minutes(1), None);
    missed.err = format!(
        "missed 3 tick(s) from {} to {}: no worker ran the job",
        (second - chrono::Duration::minutes(3)).to_rfc3339(),
        (second - chrono::Duration::minutes(1)).to_rfc3339()
    );
    missed.scheduled_at = second - chrono::Duration::minutes(3);
    batch.push(missed.clone());
    logs.append_batch(&batch).await.expect("append");

    let end = base + chrono::Duration::hours(3);
    let buckets = logs.run_buckets(&job, base, end, 3_600_000).await.expect("buckets");
    assert_eq!(buckets.len(), 2, "empty buckets are left out: {buckets:?}");
    let first = &buckets[0];
    assert_eq!(first.start, base);
    assert_eq!(first.counts.get("succeeded"), Some(&20));
    assert_eq!(first.counts.get("missed"), Some(&1));
    assert_eq!((first.timed, first.p50_ms, first.p95_ms, first.max_ms), (20, Some(10), Some(19), Some(20)));
    let last = &buckets[1];
    assert_eq!(last.start, second);
    assert_eq!(
        (last.counts.get("failed"), last.counts.get("running"), last.counts.get("missed")),
        (Some(&1), Some(&1), Some(&1))
    );
    assert_eq!((last.timed, last.p50_ms, last.p95_ms, last.max_ms), (1, Some(500), Some(500), Some(500)));
    let narrow = logs.run_buckets(&job, second, end, 60_000).await.expect("buckets");
    assert_eq!(narrow.iter().map(|b| b.counts.values().sum::<u64>()).sum::<u64>(), 3, "{narrow:?}");

    let points = logs.run_points(&job, second - chrono::Duration::minutes(5), end, 100).await.expect("points");
    let ids: Vec<&RunId> = points.iter().map(|p| &p.id).collect();
    assert_eq!(ids.len(), 3, "{points:?}");
    assert_eq!(points[0].id, missed.id, "newest first");
    assert_eq!(points[0].missed_until, Some(second - chrono::Duration::minutes(1)));
    assert_eq!(points[1], RunPoint::of(&retry));
    assert_eq!((points[2].scheduled_at, points[2].attempt, points[2].duration_ms), (second, 1, Some(500)));
    let capped = logs.run_points(&job, base, end, 5).await.expect("points");
    assert_eq!(capped.len(), 5);

    let other = unique_job("charts-other");
    logs.append_batch(&[sample_run(&other, RunStatus::Succeeded, &worker, base, Some(7))]).await.expect("append");
    let recent = logs.recent_runs(&[job.clone(), other.clone(), unique_job("charts-none")], 4).await.expect("recent");
    assert_eq!(recent.len(), 2, "a job without runs is absent");
    let mine: Vec<&RunId> = recent[&job].iter().map(|p| &p.id).collect();
    assert_eq!(mine, [&missed.id, &retry.id, &batch[21].id, &batch[20].id], "newest four, newest first");
    assert_eq!(recent[&other].len(), 1);

    let per_worker = logs.runs_per_worker(base - chrono::Duration::seconds(1)).await.expect("per worker");
    assert_eq!(per_worker.get(&WorkerId(worker.clone())), Some(&23), "20 + failed + running + other's; not missed");
    let later = logs.runs_per_worker(second).await.expect("per worker");
    assert_eq!(later.get(&WorkerId(worker)), Some(&2));
}

/// `purge_before` deletes runs that started before the cutoff and keeps the rest.
pub async fn log_store_purge(logs: Arc<dyn LogStore>) {
    let job = unique_job("purge");
    // Far in the past, so a shared store loses nothing but conformance data.
    let ancient = Utc.with_ymd_and_hms(1971, 1, 1, 0, 0, 0).single().expect("valid date");
    let cutoff = Utc.with_ymd_and_hms(1972, 1, 1, 0, 0, 0).single().expect("valid date");
    let mut records: Vec<RunRecord> = (0..5)
        .map(|i| sample_run(&job, RunStatus::Succeeded, "w", ancient + chrono::Duration::minutes(i), Some(1)))
        .collect();
    let kept = sample_run(&job, RunStatus::Succeeded, "w", cutoff, Some(1));
    records.push(kept.clone());
    logs.append_batch(&records).await.expect("append");
    let purged = logs.purge_before(cutoff).await.expect("purge");
    assert!(purged >= 5, "purge reports the deleted runs: {purged}");
    assert_eq!(logs.count(&job_filter(&job)).await.expect("count"), 1, "a run at the cutoff is kept");
    assert_eq!(logs.get(&kept.id).await.expect("get"), Some(kept));
    assert_eq!(logs.get(&records[0].id).await.expect("get"), None);
}

/// `apply_retention` deletes each job's runs past its own retention (an override, 0 = forever)
/// and every other job's runs past the default, and keeps the rest.
pub async fn log_store_retention(logs: Arc<dyn LogStore>) {
    let (short, forever, default) = (unique_job("keep-1d"), unique_job("keep-forever"), unique_job("keep-default"));
    // A "now" far in the past, so a shared store loses nothing but conformance data.
    let now = Utc.with_ymd_and_hms(1975, 6, 1, 12, 0, 0).single().expect("valid date");
    let ago = |hours: i64| now - chrono::Duration::hours(hours);
    let short_old = sample_run(&short, RunStatus::Succeeded, "w", ago(48), Some(1));
    let short_new = sample_run(&short, RunStatus::Succeeded, "w", ago(12), Some(1));
    let forever_old = sample_run(&forever, RunStatus::Failed, "w", ago(400 * 24), Some(1));
    let default_old = sample_run(&default, RunStatus::Succeeded, "w", ago(31 * 24), Some(1));
    let default_new = sample_run(&default, RunStatus::Succeeded, "w", ago(29 * 24), Some(1));
    logs.append_batch(&[
        short_old.clone(),
        short_new.clone(),
        forever_old.clone(),
        default_old.clone(),
        default_new.clone(),
    ])
    .await
    .expect("append");
    let policy =
        RetentionPolicy { default_days: 30, per_job: [(short.clone(), 1), (forever.clone(), 0)].into_iter().collect() };
    assert_eq!(policy.days_for(&default), 30);
    let deleted = logs.apply_retention(&policy, now).await.expect("retention");
    assert!(deleted >= 2, "retention reports the deleted runs: {deleted}");
    for gone in [&short_old, &default_old] {
        assert_eq!(logs.get(&gone.id).await.expect("get"), None, "expired: {} of {}", gone.id, gone.job);
    }
    for kept in [&short_new, &forever_old, &default_new] {
        assert_eq!(logs.get(&kept.id).await.expect("get").as_ref(), Some(kept), "kept: {} of {}", kept.id, kept.job);
    }
    let nothing = RetentionPolicy { default_days: 0, per_job: Default::default() };
    assert_eq!(
        logs.apply_retention(&nothing, now + chrono::Duration::days(10_000)).await.expect("retention"),
        0,
        "0 days keeps all"
    );
    assert_eq!(logs.count(&job_filter(&forever)).await.expect("count"), 1);
}
