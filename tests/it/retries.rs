//! Retries (job `retry`) and run with parameters (`POST /api/v1/jobs/{name}/run {"env"}`), on
//! real processes: a single node on the embedded stores, and three workers on a real etcd.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::{read_pid, wait_until, Node, NodeOptions};

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    let text = v[field].as_str().unwrap_or_else(|| panic!("{field} in {v}"));
    DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
}

fn attempt(v: &Value) -> u64 {
    v["attempt"].as_u64().unwrap_or(0)
}

#[test]
fn failed_attempts_retry_with_backoff_on_the_same_tick_until_one_succeeds() {
    let node = Node::start("");
    node.create_job(json!({
        "name": "flaky",
        "cron_expr": "*/15 * * * * *",
        "command": "[ \"$DISTCRON_ATTEMPT\" -ge 3 ]",
        "retry": { "max_attempts": 3, "initial_delay_secs": 1, "factor": 2 },
    }));
    // Three attempts of one tick, the third succeeding.
    let attempts = wait_until(Duration::from_secs(40), || {
        let runs = node.runs("flaky");
        let third = runs.iter().find(|r| attempt(r) == 3 && r["status"] == "succeeded")?.clone();
        let tick = third["scheduled_at"].clone();
        let mut same: Vec<Value> = runs.into_iter().filter(|r| r["scheduled_at"] == tick).collect();
        same.sort_by_key(attempt);
        Some(same)
    })
    .unwrap_or_else(|| panic!("no third attempt succeeded: {:?}", node.runs("flaky")));
    assert_eq!(attempts.iter().map(attempt).collect::<Vec<_>>(), [1, 2, 3], "one record per attempt: {attempts:?}");
    assert_eq!(
        attempts.iter().map(|r| r["status"].as_str().unwrap_or("")).collect::<Vec<_>>(),
        ["failed", "failed", "succeeded"]
    );
    assert_eq!(
        attempts.iter().map(|r| r["trigger"].as_str().unwrap_or("")).collect::<Vec<_>>(),
        ["schedule", "retry", "retry"]
    );
    let starts: Vec<DateTime<Utc>> = attempts.iter().map(|r| time(r, "started_at")).collect();
    assert!(
        starts[1] - starts[0] >= chrono::Duration::seconds(1),
        "attempt 2 started {:?} after 1",
        starts[1] - starts[0]
    );
    assert!(
        starts[2] - starts[1] >= chrono::Duration::seconds(2),
        "attempt 3 started {:?} after 2",
        starts[2] - starts[1]
    );
    // The next tick starts over at attempt 1.
    let tick = time(&attempts[0], "scheduled_at");
    let next = node
        .wait_run("flaky", Duration::from_secs(30), |r| time(r, "scheduled_at") > tick && r["status"] != "running")
        .expect("the next tick ran");
    assert_eq!((attempt(&next), next["trigger"].as_str()), (1, Some("schedule")), "{next}");
}

#[test]
fn under_forbid_the_next_tick_supersedes_a_retry_due_after_it() {
    let node = Node::start("");
    node.create_job(json!({
        "name": "slow-retry",
        "cron_expr": "*/4 * * * * *",
        "command": "exit 3",
        "retry": { "max_attempts": 3, "initial_delay_secs": 6, "jitter": false },
    }));
    let superseded = node
        .wait_run("slow-retry", Duration::from_secs(20), |r| r["status"] == "superseded")
        .unwrap_or_else(|| panic!("no superseded record: {:?}", node.runs("slow-retry")));
    assert_eq!((attempt(&superseded), superseded["trigger"].as_str()), (2, Some("retry")), "{superseded}");
    assert!(superseded["err"].as_str().unwrap_or("").contains("next tick"), "{superseded}");
    let tick = superseded["scheduled_at"].clone();
    let runs = node.runs("slow-retry");
    let first = runs.iter().find(|r| r["scheduled_at"] == tick && attempt(r) == 1).expect("attempt 1 of that tick");
    assert_eq!(first["status"], "failed");
    // The tick after it ran as a first attempt, and no attempt 2 of the old tick ever ran.
    let after = node
        .wait_run("slow-retry", Duration::from_secs(10), |r| {
            time(r, "scheduled_at") > time(&superseded, "scheduled_at") && attempt(r) == 1
        })
        .expect("the next tick ran");
    assert_eq!(after["trigger"], "schedule");
    assert!(
        !node
            .runs("slow-retry")
            .iter()
            .any(|r| r["scheduled_at"] == tick && attempt(r) == 2 && r["status"] != "superseded"),
        "a superseded attempt ran"
    );
}

#[test]
fn run_now_with_parameters_passes_and_records_them_and_retries_keep_them() {
    let node = Node::start("");
    node.create_job(json!({
        "name": "params",
        "cron_expr": "0 0 1 1 *",
        "enabled": false,
        "env": { "TARGET": "job-default", "KEEP": "job" },
        "command": "echo \"$TARGET|$KEEP|$DISTCRON_ATTEMPT\"; [ \"$DISTCRON_ATTEMPT\" -ge 2 ]",
        "retry": { "max_attempts": 2, "initial_delay_secs": 1, "jitter": false },
    }));
    let r = node.post("/api/v1/jobs/params/run", &json!({ "env": { "TARGET": "eu west" } }).to_string());
    assert_eq!(r.status, 202, "{}", r.text);
    let second = node
        .wait_run("params", Duration::from_secs(20), |r| attempt(r) == 2 && r["status"] == "succeeded")
        .unwrap_or_else(|| panic!("no second attempt: {:?}", node.runs("params")));
    let runs = node.runs("params");
    let first = runs.iter().find(|r| attempt(r) == 1).expect("first attempt");
    assert_eq!((first["trigger"].as_str(), first["status"].as_str()), (Some("manual"), Some("failed")));
    assert_eq!(first["scheduled_at"], second["scheduled_at"], "attempts of one request share its time");
    for run in [first, &second] {
        assert_eq!(run["params"], json!({ "TARGET": "eu west" }), "{run}");
        let id = run["id"].as_str().expect("id");
        let full = node.get(&format!("/api/v1/runs/{id}"));
        let want = format!("eu west|job|{}\n", attempt(run));
        assert_eq!(full.body["output"].as_str(), Some(want.as_str()), "{}", full.text);
    }
    // Without a body: a plain run, no params.
    assert_eq!(node.post_empty("/api/v1/jobs/params/run").status, 202);
    let plain = node
        .wait_run("params", Duration::from_secs(10), |r| r["params"].is_null() && r["trigger"] == "manual")
        .expect("a run without params");
    assert!(plain.get("params").is_none_or(Value::is_null));

    // Bad input: 400 naming the field, and nothing runs.
    for (body, field) in [
        (json!({ "env": { "1BAD": "x" } }), "env"),
        (json!({ "env": { "A-B": "x" } }), "env"),
        (json!({ "env": { "DISTCRON_ATTEMPT": "9" } }), "env"),
        (json!({ "env": { "BIG": "x".repeat(5000) } }), "env"),
        (json!({ "env": { "N": 5 } }), "env"),
        (json!({ "params": {} }), "params"),
    ] {
        let r = node.post("/api/v1/jobs/params/run", &body.to_string());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "invalid_request", "{}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{}", r.text);
    }
    let r = node.raw("POST", "/api/v1/jobs/params/run", "application/json", b"{not json");
    assert_eq!(r.status, 400, "{}", r.text);
}

/// Kills the processes whose pids the test's jobs wrote into a dir (`pid-*` files) on drop.
struct JobProcesses(std::path::PathBuf);

impl Drop for JobProcesses {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("pid-") {
                if let Some(pid) = read_pid(&entry.path()) {
                    let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
                }
            }
        }
    }
}

fn cluster_config(etcd: &EtcdServer) -> String {
    format!(
        "allow_local_run_log = true\n[scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 1000\nshutdown_grace_secs = 2\n\
         [executor]\nshell = \"/bin/sh\"\nkill_grace_ms = 500\n[etcd]\nendpoints = {}\nsession_ttl_secs = 3\n",
        etcd.endpoints_toml()
    )
}

/// Lines `attempt tag` the job appended.
fn attempt_lines(file: &Path) -> Vec<(u32, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (a, tag) = l.split_once(' ')?;
            Some((a.parse().ok()?, tag.to_owned()))
        })
        .collect()
}

#[test]
fn a_lost_attempt_is_retried_once_on_another_worker() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let _cleanup = JobProcesses(shared.path().to_owned());
    let file = shared.path().join("attempts.log");
    let mut nodes: Vec<Node> = ["n0", "n1", "n2"]
        .iter()
        .map(|t| {
            Node::start_with(
                &cluster_config(&etcd),
                NodeOptions { env: vec![("NODE_TAG".into(), (*t).into())], ..NodeOptions::default() },
            )
        })
        .collect();
    let ok = wait_until(Duration::from_secs(20), || {
        (nodes[0].get("/api/v1/workers").body["workers"].as_array().map_or(0, Vec::len) == 3).then_some(())
    });
    assert!(ok.is_some(), "3 workers never became live");
    // One tick, a few seconds from now (a daily fixed-time job): attempt 1 hangs, attempt 2 ends.
    let tick = Utc::now() + chrono::Duration::seconds(4);
    let cron = format!("{} {} {} * * *", tick.second(), tick.minute(), tick.hour());
    let command = format!(
        "echo \"$DISTCRON_ATTEMPT $NODE_TAG\" >> {file}; [ \"$DISTCRON_ATTEMPT\" -ge 2 ] && exit 0; echo $$ > {dir}/pid-$DISTCRON_RUN_ID; exec sleep 60",
        file = file.display(),
        dir = shared.path().display()
    );
    nodes[0].create_job(json!({
        "name": "lossy",
        "cron_expr": cron,
        "command": command,
        "retry": { "max_attempts": 3, "initial_delay_secs": 1, "on": ["lost"] },
    }));
    let first_tag = wait_until(Duration::from_secs(20), || attempt_lines(&file).first().map(|(_, t)| t.clone()))
        .expect("attempt 1 started");
    let owner: usize = first_tag.trim_start_matches('n').parse().expect("a node tag");
    nodes[owner].signal_and_wait("KILL", Duration::from_secs(5)).expect("worker killed");
    let dead = nodes.remove(owner);

    // Session TTL 3 s, then the loss is recorded once and attempt 2 runs on a survivor.
    let second =
        wait_until(Duration::from_secs(30), || attempt_lines(&file).into_iter().find(|(a, _)| *a == 2).map(|(_, t)| t))
            .unwrap_or_else(|| panic!("attempt 2 never ran: {:?}", attempt_lines(&file)));
    assert_ne!(second, first_tag, "attempt 2 ran on the dead worker");
    // Let any duplicate show up before counting.
    let settled = wait_until(Duration::from_secs(6), || {
        let recorded = nodes
            .iter()
            .flat_map(|n| n.runs("lossy"))
            .filter(|r| attempt(r) == 2 && r["status"] == "succeeded")
            .count();
        (recorded >= 1).then_some(())
    });
    assert!(settled.is_some(), "attempt 2 was not recorded");
    std::thread::sleep(Duration::from_secs(3));
    let lines = attempt_lines(&file);
    assert_eq!(lines.iter().filter(|(a, _)| *a == 2).count(), 1, "attempt 2 ran exactly once: {lines:?}");
    assert_eq!(lines.iter().filter(|(a, _)| *a == 1).count(), 1, "the tick ran once: {lines:?}");
    assert!(!lines.iter().any(|(a, _)| *a >= 3), "no attempt after the success: {lines:?}");
    let runs: Vec<Value> = nodes.iter().flat_map(|n| n.runs("lossy")).collect();
    let lost: Vec<&Value> = runs.iter().filter(|r| r["status"] == "lost").collect();
    assert_eq!(lost.len(), 1, "attempt 1 recorded lost once: {runs:?}");
    let retried: Vec<&Value> = runs.iter().filter(|r| attempt(r) == 2).collect();
    assert_eq!(retried.len(), 1, "{runs:?}");
    assert_eq!(retried[0]["trigger"], "retry");
    assert_eq!(retried[0]["scheduled_at"], lost[0]["scheduled_at"], "attempts share the tick");
    drop(dead);
}
