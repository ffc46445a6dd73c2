//! Catch-up after downtime and backfill on a real single node (embedded stores) and on a cluster
//! (real etcd, the shared run log in FerretDB): ticks missed while every worker was stopped run
//! per the job's `catchup` policy, once across workers and in order, or are recorded `missed`
//! once; a backfill runs each tick of a past range once.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::ferretdb::FerretDb;
use crate::support::{wait_until, Node};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc)).expect("RFC 3339 time")
}

fn with_trigger<'a>(runs: &'a [Value], trigger: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["trigger"] == trigger).collect()
}

#[test]
fn all_runs_the_latest_max_runs_missed_ticks_in_order_after_a_restart_and_records_the_rest_once() {
    let mut node = Node::start("");
    node.create_job(json!({
        "name": "cu", "command": "true", "cron_expr": "*/2 * * * * *", "concurrency": "allow",
        "catchup": {"policy": "all", "window_secs": 3600, "max_runs": 3}
    }));
    node.wait_run("cu", Duration::from_secs(15), |r| r["status"] == "succeeded").expect("a scheduled run");
    node.signal_and_wait("TERM", Duration::from_secs(20)).expect("stopped");
    let stopped = Utc::now();
    std::thread::sleep(Duration::from_secs(13));
    let restarted = Utc::now();
    node.restart();
    let runs = wait_until(Duration::from_secs(30), || {
        let runs = node.runs("cu");
        let done = with_trigger(&runs, "catchup").iter().filter(|r| r["status"] == "succeeded").count() == 3
            && runs.iter().any(|r| r["status"] == "missed");
        done.then_some(runs)
    })
    .expect("three catch-up runs and one missed record");
    let mut catchup: Vec<DateTime<Utc>> =
        with_trigger(&runs, "catchup").iter().map(|r| time(&r["scheduled_at"])).collect();
    catchup.sort();
    assert_eq!(catchup.len(), 3, "{runs:?}");
    assert!(catchup.iter().all(|t| *t > stopped - chrono::Duration::seconds(2) && *t <= restarted));
    assert_eq!((catchup[1] - catchup[0]).num_seconds(), 2, "consecutive ticks: {catchup:?}");
    assert_eq!((catchup[2] - catchup[1]).num_seconds(), 2, "consecutive ticks: {catchup:?}");
    let missed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "missed").collect();
    assert_eq!(missed.len(), 1, "one summary record for the gap: {missed:?}");
    assert!(time(&missed[0]["scheduled_at"]) < catchup[0], "the older ticks are the missed ones");
    assert!(missed[0]["err"].as_str().unwrap_or("").contains("missed"), "{}", missed[0]);
    let mut seen = HashSet::new();
    for r in runs.iter().filter(|r| r["status"] != "missed") {
        assert!(seen.insert(r["scheduled_at"].as_str().unwrap_or("").to_owned()), "no tick twice: {r}");
    }
}

#[test]
fn backfill_runs_each_tick_of_a_past_range_once_and_refuses_bad_ranges() {
    let node = Node::start("");
    node.create_job(json!({"name": "bf", "command": "true", "cron_expr": "*/5 * * * * *", "enabled": false}));
    let to = Utc::now().trunc_subsecs(0) - chrono::Duration::seconds(1);
    let from = to - chrono::Duration::seconds(19);
    let r = node.post("/api/v1/jobs/bf/backfill", &json!({"from": from, "to": to}).to_string());
    assert_eq!(r.status, 202, "{}", r.text);
    let ticks = usize::try_from(r.body["ticks"].as_u64().expect("ticks")).expect("small");
    assert_eq!(ticks, 4, "{}", r.text);
    let runs = wait_until(Duration::from_secs(30), || {
        let runs = node.runs("bf");
        (with_trigger(&runs, "backfill").iter().filter(|r| r["status"] == "succeeded").count() == ticks).then_some(runs)
    })
    .expect("every backfill tick ran");
    let got: HashSet<DateTime<Utc>> = runs.iter().map(|r| time(&r["scheduled_at"])).collect();
    assert_eq!(got.len(), ticks, "each tick once: {runs:?}");
    assert!(got.iter().all(|t| *t >= from && *t <= to && t.timestamp() % 5 == 0));

    let bad = |body: Value, field: &str| {
        let r = node.post("/api/v1/jobs/bf/backfill", &body.to_string());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{}", r.text);
    };
    bad(json!({"from": to, "to": from}), "from");
    bad(json!({"from": from, "to": Utc::now() + chrono::Duration::hours(1)}), "to");
    bad(json!({"from": to - chrono::Duration::days(1), "to": to}), "to");
    assert_eq!(node.post("/api/v1/jobs/nope/backfill", &json!({"from": from, "to": to}).to_string()).status, 404);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(node.runs("bf").len(), ticks, "refused requests run nothing");
}

/// A cluster node's config: `role` on `etcd`, the shared run log at `mongo`.
fn cluster_toml(etcd: &EtcdServer, mongo: &FerretDb, role: &str) -> String {
    format!(
        "role = \"{role}\"\n[mongo]\nuri = \"{}\"\n[scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 1000\n\
         shutdown_grace_secs = 2\n[executor]\nshell = \"/bin/sh\"\n[etcd]\nendpoints = {}\nsession_ttl_secs = 3\n",
        mongo.uri(),
        etcd.endpoints_toml()
    )
}

/// Sleeps until `offset_ms` past the next multiple of `period_secs` (so a restart falls between
/// two ticks, never on one).
fn sleep_to_phase(period_secs: i64, offset_ms: i64) {
    let now = Utc::now().timestamp_millis();
    let period = period_secs * 1000;
    let target = (now / period + 1) * period + offset_ms;
    std::thread::sleep(Duration::from_millis(u64::try_from(target - now).unwrap_or(0)));
}

/// Stops every worker (SIGTERM, waiting for each), and returns when the last one stopped.
fn stop_all(workers: &mut [Node]) -> DateTime<Utc> {
    for w in workers.iter_mut() {
        w.signal_and_wait("TERM", Duration::from_secs(20)).expect("worker stopped");
    }
    Utc::now()
}

/// Starts every worker again at once (each on its own thread), between two ticks.
fn restart_all(workers: &mut [Node]) {
    std::thread::scope(|s| {
        for w in workers.iter_mut() {
            s.spawn(move || w.restart());
        }
    });
}

fn wait_live_workers(master: &Node, n: usize) {
    wait_until(Duration::from_secs(30), || {
        (master.get("/api/v1/workers").body["workers"].as_array().map(Vec::len) == Some(n)).then_some(())
    })
    .unwrap_or_else(|| panic!("{n} live workers: {}", master.get("/api/v1/workers").text));
}

/// No tick ran (or was recorded skipped) twice; `missed` summaries are ranges, not ticks.
fn assert_each_tick_once(runs: &[Value]) {
    let mut seen = HashSet::new();
    for r in runs.iter().filter(|r| r["status"] != "missed") {
        assert!(seen.insert(r["scheduled_at"].as_str().unwrap_or("").to_owned()), "a tick twice: {r}\n{runs:#?}");
    }
}

#[test]
fn a_cluster_down_for_a_minute_runs_the_latest_missed_tick_once_and_records_the_rest_once() {
    let etcd = EtcdServer::start();
    let mongo = FerretDb::start();
    let master = Node::start(&cluster_toml(&etcd, &mongo, "master"));
    let mut workers: Vec<Node> = (0..2).map(|_| Node::start(&cluster_toml(&etcd, &mongo, "worker"))).collect();
    wait_live_workers(&master, 2);
    master.create_job(json!({
        "name": "tenner", "command": "true", "cron_expr": "*/10 * * * * *",
        "catchup": {"policy": "latest", "window_secs": 3600}
    }));
    master.wait_run("tenner", Duration::from_secs(30), |r| r["status"] == "succeeded").expect("a scheduled run");

    // Every worker down for a minute; back together, 3 s after a tick.
    let stopped = stop_all(&mut workers);
    std::thread::sleep(Duration::from_secs(55));
    sleep_to_phase(10, 3000);
    let restarted = Utc::now();
    restart_all(&mut workers);
    let last_tick = DateTime::from_timestamp(restarted.timestamp() - restarted.timestamp().rem_euclid(10), 0)
        .expect("time in range");

    wait_until(Duration::from_secs(60), || {
        let runs = master.runs("tenner");
        let caught = with_trigger(&runs, "catchup").iter().any(|r| r["status"] == "succeeded");
        let missed = runs.iter().any(|r| r["status"] == "missed");
        (caught && missed).then_some(())
    })
    .unwrap_or_else(|| panic!("a catch-up run and a missed record: {:#?}", master.runs("tenner")));
    // Runs that started since are recorded too; wait a little so a duplicate would show.
    std::thread::sleep(Duration::from_secs(3));
    let runs = master.runs("tenner");
    let catchup = with_trigger(&runs, "catchup");
    assert_eq!(catchup.len(), 1, "exactly one catch-up run: {runs:#?}");
    assert_eq!(time(&catchup[0]["scheduled_at"]), last_tick, "the last tick missed: {runs:#?}");
    let missed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "missed").collect();
    assert_eq!(missed.len(), 1, "one missed record for the gap: {missed:#?}");
    let first_missed = time(&missed[0]["scheduled_at"]);
    assert!(first_missed > stopped - chrono::Duration::seconds(10) && first_missed < last_tick, "{}", missed[0]);
    let err = missed[0]["err"].as_str().unwrap_or("");
    assert!(err.contains('5') || err.contains('6'), "the gap's count (5 or 6 ticks): {err}");
    assert_each_tick_once(&runs);
}

#[test]
fn all_with_max_runs_three_on_three_workers_runs_three_catchup_ticks_once_each_in_order() {
    let etcd = EtcdServer::start();
    let mongo = FerretDb::start();
    let master = Node::start(&cluster_toml(&etcd, &mongo, "master"));
    let mut workers: Vec<Node> = (0..3).map(|_| Node::start(&cluster_toml(&etcd, &mongo, "worker"))).collect();
    wait_live_workers(&master, 3);
    master.create_job(json!({
        "name": "fiver", "command": "sleep 0.2", "cron_expr": "*/5 * * * * *", "concurrency": "allow",
        "catchup": {"policy": "all", "window_secs": 3600, "max_runs": 3}
    }));
    master.wait_run("fiver", Duration::from_secs(30), |r| r["status"] == "succeeded").expect("a scheduled run");

    stop_all(&mut workers);
    std::thread::sleep(Duration::from_secs(21));
    sleep_to_phase(5, 1500);
    let restarted = Utc::now();
    restart_all(&mut workers);
    let last_tick = DateTime::from_timestamp(restarted.timestamp() - restarted.timestamp().rem_euclid(5), 0)
        .expect("time in range");

    wait_until(Duration::from_secs(60), || {
        let runs = master.runs("fiver");
        let done = with_trigger(&runs, "catchup").iter().filter(|r| r["status"] == "succeeded").count() >= 3
            && runs.iter().any(|r| r["status"] == "missed");
        done.then_some(())
    })
    .unwrap_or_else(|| panic!("three catch-up runs and a missed record: {:#?}", master.runs("fiver")));
    std::thread::sleep(Duration::from_secs(3));
    let runs = master.runs("fiver");
    let mut catchup: Vec<(DateTime<Utc>, u64)> = with_trigger(&runs, "catchup")
        .iter()
        .map(|r| (time(&r["scheduled_at"]), r["fence"].as_u64().expect("fence")))
        .collect();
    catchup.sort();
    let ticks: Vec<DateTime<Utc>> = catchup.iter().map(|c| c.0).collect();
    let want: Vec<DateTime<Utc>> = (0..3).rev().map(|i| last_tick - chrono::Duration::seconds(5 * i)).collect();
    assert_eq!(ticks, want, "the latest three missed ticks: {runs:#?}");
    // Claimed in order: each catch-up tick's claim (its fence) after the one before.
    assert!(catchup.windows(2).all(|w| w[0].1 < w[1].1), "claimed oldest first: {catchup:?}");
    assert_eq!(runs.iter().filter(|r| r["status"] == "missed").count(), 1, "one missed record: {runs:#?}");
    assert_each_tick_once(&runs);
}
