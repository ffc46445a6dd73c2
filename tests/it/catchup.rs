//! Catch-up after downtime and backfill on a real single node (embedded stores): ticks missed
//! while the node was stopped run per the job's `catchup` policy or are recorded `missed` once;
//! a backfill runs each tick of a past range once.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Value};

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
