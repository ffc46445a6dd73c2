//! Worker labels on a real etcd (README "Worker labels"): four `--role all` nodes, two labelled
//! `zone=a` and two `zone=b`, and a job every second with `selector = {zone = "b"}`. Every tick
//! runs on a zone-b worker; once the zone-b workers are killed and their sessions expired, each
//! tick is recorded `skipped` (`no_eligible_worker`) exactly once, and nothing runs on zone a.
//!
//! Cluster timings as in `cluster.rs` (session TTL 3 s, failover grace 1 s, heartbeat 1 s);
//! each node keeps its own run log, so a record is read from the node that wrote it; commands
//! append `$DISTCRON_SCHEDULED_AT $NODE_TAG` to a shared file to tell where a tick ran.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::{wait_until, Node, NodeOptions};

/// A `--role all` node over `etcd` with `top` (top-level TOML, e.g. `labels = {...}`).
fn config(etcd: &EtcdServer, top: &str) -> String {
    format!(
        "role = \"all\"\nallow_local_run_log = true\n{top}\n[scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 1000\n\
         shutdown_grace_secs = 2\n[executor]\nshell = \"/bin/sh\"\n[etcd]\nendpoints = {}\nsession_ttl_secs = 3\n",
        etcd.endpoints_toml()
    )
}

fn options(tag: &str, env: &[(&str, &str)]) -> NodeOptions {
    let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    env.push(("NODE_TAG".into(), tag.into()));
    NodeOptions { env, log_level: "info".into(), ..NodeOptions::default() }
}

/// (tick, node tag) of every line the job appended.
fn lines(file: &Path) -> Vec<(DateTime<Utc>, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (tick, tag) = l.split_once(' ')?;
            Some((DateTime::parse_from_rfc3339(tick).ok()?.with_timezone(&Utc), tag.to_owned()))
        })
        .collect()
}

fn time(run: &Value, field: &str) -> DateTime<Utc> {
    run[field].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc)).expect(field)
}

/// Every record of `job` on the zone-a nodes.
fn zone_a_records(nodes: &[&Node], job: &str) -> Vec<Value> {
    nodes.iter().flat_map(|n| n.runs(job)).collect()
}

#[test]
fn a_selector_keeps_ticks_on_matching_workers_and_records_no_eligible_worker_once() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("ticks.log");
    // Zone b first, so the zone-a nodes' first listing already shows them. Labels come from the
    // config file, the environment and a mix.
    let mut b1 = Node::start_with(&config(&etcd, ""), options("b1", &[("DISTCRON_LABELS", "zone=b")]));
    let mut b2 = Node::start_with(&config(&etcd, "labels = { zone = \"b\", gpu = \"true\" }"), options("b2", &[]));
    let a1 = Node::start_with(&config(&etcd, "labels = { zone = \"a\" }"), options("a1", &[]));
    let a2 = Node::start_with(&config(&etcd, ""), options("a2", &[("DISTCRON_LABELS", "zone=a,gpu=true")]));
    let listed = wait_until(Duration::from_secs(20), || {
        let r = a1.get("/api/v1/workers");
        let workers = r.body["workers"].as_array().cloned().unwrap_or_default();
        (workers.len() == 4).then_some(workers)
    })
    .unwrap_or_else(|| panic!("4 workers never became live: {}", a1.get("/api/v1/workers").text));
    let mut zones: Vec<String> =
        listed.iter().map(|w| w["labels"]["zone"].as_str().unwrap_or("?").to_owned()).collect();
    zones.sort();
    assert_eq!(zones, ["a", "a", "b", "b"], "/api/v1/workers shows each worker's labels: {listed:?}");
    assert_eq!(listed.iter().filter(|w| w["labels"]["gpu"] == "true").count(), 2, "{listed:?}");
    // The seed's /worker/list stays addresses only.
    let legacy = a1.get("/worker/list");
    assert!(legacy.body["data"].as_array().is_some_and(|a| a.iter().all(Value::is_string)), "{}", legacy.text);

    let command = format!("echo \"$DISTCRON_SCHEDULED_AT $NODE_TAG\" >> {}", file.display());
    a1.create_job(json!({"name": "zoned", "cron_expr": "* * * * * *", "command": command, "selector": {"zone": "b"}}));

    // Phase 1: 30 ticks, every one on zone b, once each.
    let ran = wait_until(Duration::from_secs(90), || {
        let l = lines(&file);
        (l.len() >= 30).then_some(l)
    })
    .unwrap_or_else(|| panic!("30 ticks never ran: {:?}", lines(&file)));
    assert!(ran.iter().all(|(_, tag)| tag.starts_with('b')), "a tick ran outside zone b: {ran:?}");
    let mut per_tick: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for (tick, _) in &ran {
        *per_tick.entry(*tick).or_default() += 1;
    }
    assert!(per_tick.values().all(|n| *n == 1), "a tick ran twice: {ran:?}");
    let spread: Vec<&str> = ["b1", "b2"].into_iter().filter(|t| ran.iter().any(|(_, tag)| tag == t)).collect();
    assert!(!spread.is_empty(), "{ran:?}");
    let before_kill: Vec<Value> = zone_a_records(&[&a1, &a2], "zoned");
    assert!(before_kill.iter().all(|r| r["status"] == "skipped"), "the zone-a workers run nothing: {before_kill:?}");

    // Phase 2: zone b dies (no clean leave); its sessions expire after the 3 s TTL.
    let killed_at = Utc::now();
    b1.signal_and_wait("KILL", Duration::from_secs(5)).expect("b1 killed");
    b2.signal_and_wait("KILL", Duration::from_secs(5)).expect("b2 killed");
    let lines_at_kill = lines(&file).len();
    let expired = killed_at + chrono::Duration::seconds(6);
    let window_end = expired + chrono::Duration::seconds(8);
    let skipped = wait_until(Duration::from_secs(60), || {
        let records = zone_a_records(&[&a1, &a2], "zoned");
        records.iter().any(|r| time(r, "scheduled_at") >= window_end).then_some(records)
    })
    .unwrap_or_else(|| {
        panic!("no skipped ticks after zone b died: a1 {:?} a2 {:?}", a1.runs("zoned"), a2.runs("zoned"))
    });
    // Nothing ran on zone a: no line from a zone-a node, every record there is a skip.
    let after = lines(&file);
    assert!(after.iter().all(|(_, tag)| tag.starts_with('b')), "a tick ran on zone a: {after:?}");
    assert!(after.len() <= lines_at_kill + 2, "ticks ran after zone b was killed: {after:?}");
    for r in &skipped {
        assert_eq!(r["status"], "skipped", "{r}");
        let err = r["err"].as_str().unwrap_or("");
        assert!(err.starts_with("no_eligible_worker"), "{r}");
        assert!(err.contains("zone=b"), "the reason names the selector: {r}");
    }
    // Once per tick cluster-wide: no scheduled_at twice among both zone-a nodes' records, and
    // every tick of the window after the sessions expired is accounted for.
    let mut per_tick: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for r in &skipped {
        *per_tick.entry(time(r, "scheduled_at")).or_default() += 1;
    }
    let twice: Vec<_> = per_tick.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "a tick was recorded twice: {twice:?}");
    let mut tick = DateTime::from_timestamp(expired.timestamp() + 1, 0).expect("time");
    while tick < window_end {
        assert_eq!(per_tick.get(&tick), Some(&1), "tick {tick} has no skipped record: {skipped:?}");
        tick += chrono::Duration::seconds(1);
    }
}
