//! Jitter (`jitter_secs`) in a cluster on a real etcd: three `all` nodes agree on a job's offset,
//! every run of a tick fires at tick + offset and records both times, each tick runs once, and
//! the offset survives a restart of every node.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::{wait_until, Node, NodeOptions};

/// FNV-1a 64 of the name modulo `jitter_secs`: the documented offset, computed here
/// independently of the server.
fn expected_offset(name: &str, jitter_secs: u64) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    i64::try_from(hash % jitter_secs).expect("small")
}

fn config(etcd: &EtcdServer) -> String {
    format!(
        "role = \"all\"\nallow_local_run_log = true\n[scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 1000\n\
         shutdown_grace_secs = 2\n[executor]\nshell = \"/bin/sh\"\n[etcd]\nendpoints = {}\nsession_ttl_secs = 3\n",
        etcd.endpoints_toml()
    )
}

fn tagged(tag: &str) -> NodeOptions {
    NodeOptions { env: vec![("NODE_TAG".into(), tag.into())], ..NodeOptions::default() }
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v[key].as_str().and_then(|s| s.parse().ok())
}

/// Every finished run of `job` across `nodes` (each node keeps its own run log).
fn all_runs(nodes: &[Node], job: &str) -> Vec<Value> {
    nodes.iter().flat_map(|n| n.runs(job)).filter(|r| r["status"] == "succeeded").collect()
}

/// Checks every run: `fire_at - scheduled_at` is the offset and it started no earlier; returns
/// the ticks run, each counted.
fn check_runs(runs: &[Value], offset: i64) -> HashMap<DateTime<Utc>, usize> {
    let mut ticks: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for run in runs {
        let scheduled = time(run, "scheduled_at").expect("scheduled_at");
        let fire = time(run, "fire_at").unwrap_or_else(|| panic!("a jittered run records fire_at: {run}"));
        assert_eq!((fire - scheduled).num_seconds(), offset, "{run}");
        assert_eq!(scheduled.timestamp() % 10, 0, "scheduled_at is the tick: {run}");
        let started = time(run, "started_at").expect("started_at");
        assert!(started >= fire, "started {started} before its fire time {fire}: {run}");
        *ticks.entry(scheduled).or_default() += 1;
    }
    ticks
}

#[test]
fn three_workers_agree_on_the_offset_and_runs_record_fire_at_before_and_after_a_restart() {
    let etcd = EtcdServer::start();
    let mut nodes: Vec<Node> = ["j0", "j1", "j2"].iter().map(|t| Node::start_with(&config(&etcd), tagged(t))).collect();
    wait_until(Duration::from_secs(20), || {
        let r = nodes[0].get("/api/v1/workers");
        (r.body["workers"].as_array().map_or(0, Vec::len) >= 3).then_some(())
    })
    .expect("three workers live");
    let (name, jitter) = ("spread", 9);
    let offset = expected_offset(name, jitter);
    assert!(offset > 0, "the test needs a name with a nonzero offset");
    let created = nodes[0].create_job(json!({
        "name": name, "cron_expr": "*/10 * * * * *", "jitter_secs": jitter, "concurrency": "allow",
        "command": "echo \"$DISTCRON_SCHEDULED_AT $NODE_TAG\"",
    }));
    assert_eq!(created["jitter_offset_secs"], offset, "{created}");

    // Every node reads the same offset, and its next fire time is a tick plus it.
    let views: Vec<Value> = nodes.iter().map(|n| n.get(&format!("/api/v1/jobs/{name}")).body).collect();
    for view in &views {
        assert_eq!(view["jitter_offset_secs"], offset, "{view}");
        let next = time(view, "next_run_at").expect("next_run_at");
        assert_eq!(next.timestamp().rem_euclid(10), offset, "{view}");
    }
    // The preview shows the same fire times.
    let preview =
        nodes[1].get(&format!("/api/v1/cron/preview?expr=*/10+*+*+*+*+*&name={name}&jitter_secs={jitter}&count=3"));
    assert_eq!(preview.status, 200, "{}", preview.text);
    assert_eq!(preview.body["jitter_offset_secs"], offset);
    let (next, fire) =
        (preview.body["next"].as_array().expect("next"), preview.body["fire_at"].as_array().expect("fire_at"));
    for (tick, at) in next.iter().zip(fire) {
        let (tick, at) = (
            tick.as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok()),
            at.as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok()),
        );
        assert_eq!((at.expect("fire") - tick.expect("tick")).num_seconds(), offset);
    }

    // Three ticks run, each once, at tick + offset.
    let runs = wait_until(Duration::from_secs(60), || {
        let runs = all_runs(&nodes, name);
        (runs.len() >= 3).then_some(runs)
    })
    .expect("three jittered runs");
    let ticks = check_runs(&runs, offset);
    assert!(ticks.values().all(|n| *n == 1), "a tick ran twice: {ticks:?}");

    // Restart every node: the offset is the same, and so are the new runs.
    let before = runs.len();
    for node in &mut nodes {
        node.signal_and_wait("TERM", Duration::from_secs(15)).expect("node stopped");
        node.restart();
    }
    for node in &nodes {
        let view = wait_until(Duration::from_secs(20), || {
            let r = node.get(&format!("/api/v1/jobs/{name}"));
            (r.status == 200).then_some(r.body)
        })
        .expect("job readable after restart");
        assert_eq!(view["jitter_offset_secs"], offset, "{view}");
    }
    let runs = wait_until(Duration::from_secs(60), || {
        let runs = all_runs(&nodes, name);
        (runs.len() >= before + 2).then_some(runs)
    })
    .expect("runs after the restart");
    let ticks = check_runs(&runs, offset);
    assert!(ticks.values().all(|n| *n == 1), "a tick ran twice: {ticks:?}");
}
