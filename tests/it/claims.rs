//! Every claimed tick accounted for (issue 10 item 5), on a real etcd with real processes: a
//! worker killed between its claims and the spawn (test hook `abort_after_claim`), and a worker
//! whose scheduling thread is blocked longer than its session TTL (`block_after_claim_ms`).
//!
//! Nodes keep their run logs embedded (each node's own SQLite), so records are gathered from
//! every surviving node (role `all`, whose API serves its log): a `lost` record is written by
//! whichever surviving node claimed the right to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::etcd::{EtcdClient, EtcdServer};
use crate::support::{wait_until, Node, NodeOptions};

/// A node's config for `role` over `etcd`: short cluster timings (session TTL 3 s, failover
/// grace 500 ms, heartbeat 1 s), run logs embedded per node.
fn config(etcd: &EtcdServer, role: &str) -> String {
    format!(
        "role = \"{role}\"\nallow_local_run_log = true\n[scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 500\n\
         shutdown_grace_secs = 2\n[executor]\nshell = \"/bin/sh\"\nkill_grace_ms = 500\n[etcd]\nendpoints = {}\n\
         session_ttl_secs = 3\n",
        etcd.endpoints_toml()
    )
}

fn options(id: &str, hooks: &str) -> NodeOptions {
    let mut env = vec![("DISTCRON_NODE_ID".to_owned(), id.to_owned())];
    if !hooks.is_empty() {
        env.push(("DISTCRON_TEST_HOOKS".to_owned(), hooks.to_owned()));
    }
    NodeOptions { env, log_level: "info".into(), ..NodeOptions::default() }
}

fn wait_workers(node: &Node, n: usize) {
    let ok = wait_until(Duration::from_secs(20), || {
        let r = node.get("/api/v1/workers");
        (r.body["workers"].as_array().map_or(0, Vec::len) == n).then_some(())
    });
    assert!(ok.is_some(), "{n} workers never became live: {}", node.get("/api/v1/workers").text);
}

/// The lease `key` is on, if the key exists.
fn lease_of(c: &mut EtcdClient, key: &str) -> Option<i64> {
    let key = key.to_owned();
    c.run(|mut c| async move { c.get(key, None).await.expect("etcd get").kvs().first().map(|kv| kv.lease()) })
}

fn tick_of(run: &Value) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(run["scheduled_at"].as_str()?).ok()?.with_timezone(&Utc);
    DateTime::from_timestamp(t.timestamp(), 0)
}

/// Every record of `jobs` on every node, by run id (a run recorded by two nodes, e.g. its
/// worker and the lost-run recorder, is one run).
fn records(nodes: &[&Node], jobs: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for node in nodes {
        for job in jobs {
            for run in node.runs(job) {
                if let Some(id) = run["id"].as_str() {
                    out.insert(id.to_owned(), run);
                }
            }
        }
    }
    out
}

/// Lines the test's jobs appended: (job, tick, run id), one per run that really started.
fn started_runs(file: &std::path::Path) -> Vec<(String, DateTime<Utc>, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let job = parts.next()?.to_owned();
            let tick = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
            let tick = DateTime::from_timestamp(tick.timestamp(), 0)?;
            Some((job, tick, parts.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn every_tick_has_one_run_or_one_lost_record_while_a_worker_is_killed_right_after_its_claims() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("runs.log");
    let master = Node::start_with(&config(&etcd, "master"), options("master", ""));
    let steady: Vec<Node> =
        ["w0", "w1"].iter().map(|id| Node::start_with(&config(&etcd, "all"), options(id, ""))).collect();
    // The victim dies (SIGKILL) at its 6th claim that wrote a mark, before spawning that run;
    // restarted, it dies again.
    let mut victim = Node::start_with(&config(&etcd, "worker"), options("victim", "abort_after_claim=6"));
    wait_workers(&master, 3);
    let jobs: Vec<String> = (0..9).map(|i| format!("tick-{i}")).collect();
    let command = format!("echo \"$DISTCRON_JOB $DISTCRON_SCHEDULED_AT $DISTCRON_RUN_ID\" >> {}", file.display());
    for job in &jobs {
        master
            .create_job(json!({ "name": job, "cron_expr": "* * * * * *", "concurrency": "allow", "command": command }));
    }
    let from = DateTime::from_timestamp(Utc::now().timestamp() + 2, 0).expect("time");
    let mut deaths = 0;
    loop {
        let status = victim.wait_exit(Duration::from_secs(30));
        assert!(status.is_some(), "the hook never killed the victim:\n{}", victim.log());
        deaths += 1;
        if deaths == 4 {
            break;
        }
        victim.restart();
    }
    // The last incarnation stays dead: its jobs fail over to the others.
    let to = DateTime::from_timestamp(Utc::now().timestamp() + 3, 0).expect("time");
    assert!(to - from > chrono::Duration::seconds(5), "a window of ticks to count: {from} .. {to}");

    // Per tick of the window: the runs that started (their lines) and the `lost` records (on the
    // surviving nodes, which record a dead worker's claimed ticks).
    let survivors: Vec<&Node> = std::iter::once(&master).chain(steady.iter()).collect();
    let tally = || {
        let mut per_tick: BTreeMap<(String, DateTime<Utc>), (usize, BTreeSet<String>)> = BTreeMap::new();
        for (job, tick, run) in started_runs(&file) {
            let entry = per_tick.entry((job, tick)).or_default();
            entry.0 += 1;
            entry.1.insert(run);
        }
        let all = records(&survivors, &jobs);
        let lost: Vec<Value> = all.into_values().filter(|r| r["status"] == "lost").collect();
        for r in &lost {
            let (Some(job), Some(tick), Some(id)) = (r["job"].as_str(), tick_of(r), r["id"].as_str()) else { continue };
            per_tick.entry((job.to_owned(), tick)).or_default().1.insert(id.to_owned());
        }
        per_tick.retain(|(_, tick), _| *tick >= from && *tick < to);
        let mut holes = Vec::new();
        for job in &jobs {
            let mut t = from;
            while t < to {
                if !per_tick.contains_key(&(job.clone(), t)) {
                    holes.push(format!("{job}@{t}"));
                }
                t += chrono::Duration::seconds(1);
            }
        }
        (per_tick, holes, lost)
    };
    // Lost ticks show after the session TTL (3 s) and the recorder's settle time.
    let settled = wait_until(Duration::from_secs(30), || tally().1.is_empty().then_some(()));
    let (per_tick, holes, lost) = tally();
    assert!(settled.is_some(), "{} ticks with neither a run nor a lost record: {holes:?}", holes.len());
    let doubles: Vec<String> = per_tick
        .iter()
        .filter(|(_, (lines, ids))| *lines > 1 || ids.len() != 1)
        .map(|((j, t), (lines, ids))| format!("{j}@{t} lines={lines} runs={ids:?}"))
        .collect();
    assert!(doubles.is_empty(), "ticks run twice or accounted twice: {doubles:?}");
    let lost_in_window = lost.iter().filter(|r| tick_of(r).is_some_and(|t| t >= from && t < to)).count();
    assert!(lost_in_window >= deaths, "each death lost at least its claimed tick: {lost_in_window} lost");
    for r in &lost {
        assert_eq!(r["worker"], "victim", "only the victim's claims are lost: {r}");
        assert!(r["fence"].as_i64().is_some_and(|f| f > 0), "a lost record carries its claim's fence: {r}");
        assert!(r["err"].as_str().unwrap_or("").contains("claimed this tick"), "{r}");
    }
}

#[test]
fn a_worker_whose_scheduling_thread_is_blocked_longer_than_its_session_ttl_keeps_its_session() {
    let etcd = EtcdServer::start();
    let master = Node::start_with(&config(&etcd, "master"), options("master", ""));
    // Blocks the actix System thread for 7 s (the session TTL is 3 s) right after its first claim.
    let worker = Node::start_with(&config(&etcd, "all"), options("busy", "block_after_claim_ms=7000"));
    wait_workers(&master, 1);
    let mut c = etcd.client();
    let lease_before = lease_of(&mut c, "/cron/workers/busy");
    master.create_job(
        json!({ "name": "steady", "cron_expr": "* * * * * *", "concurrency": "forbid", "command": "true" }),
    );
    let blocked =
        wait_until(Duration::from_secs(20), || worker.log().contains("blocking the scheduling thread").then_some(()));
    assert!(blocked.is_some(), "the hook fired:\n{}", worker.log());
    std::thread::sleep(Duration::from_secs(8));
    // The run claimed before the block ran, and nothing of this worker was recorded lost.
    let ran = wait_until(Duration::from_secs(15), || {
        let runs = worker.runs("steady");
        (runs.iter().filter(|r| r["status"] == "succeeded").count() >= 3).then_some(runs)
    });
    assert!(ran.is_some(), "the busy worker's runs finished: {:?}", worker.runs("steady"));
    std::thread::sleep(Duration::from_secs(2));
    let lost: Vec<Value> = master.runs("steady").into_iter().filter(|r| r["status"] == "lost").collect();
    assert!(lost.is_empty(), "a busy worker's runs were recorded lost: {lost:?}");
    assert!(!worker.log().contains("etcd session lost"), "the session was never lost:\n{}", worker.log());
    assert_eq!(lease_of(&mut c, "/cron/workers/busy"), lease_before, "the worker kept its lease");
    assert!(lease_before.is_some());
}
