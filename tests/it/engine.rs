//! The engine end to end: ticks, kill, timeout, concurrency policies, run now, disable, output
//! cap, restart recovery and graceful shutdown, on a real node.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::{process_alive, read_pid, wait_until, Node};

const FAST_KILL: &str = "[executor]\nkill_grace_ms = 500\n";

fn status_of(run: &Value) -> &str {
    run["status"].as_str().unwrap_or("")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc)).expect("RFC 3339 time")
}

#[test]
fn every_second_job_runs_each_tick_once_with_its_scheduled_time() {
    let node = Node::start("");
    let out = node.path("ticks.txt");
    node.create_job(json!({
        "name": "tick", "cron_expr": "* * * * * *", "concurrency": "allow",
        "command": format!("echo \"$DISTCRON_SCHEDULED_AT $DISTCRON_JOB $DISTCRON_ATTEMPT $DISTCRON_RUN_ID\" >> {}", out.display()),
    }));
    std::thread::sleep(Duration::from_secs(11));
    node.post_empty("/api/v1/jobs/tick/disable");
    std::thread::sleep(Duration::from_millis(1500));
    let text = std::fs::read_to_string(&out).expect("job wrote its ticks");
    let mut ticks: Vec<DateTime<Utc>> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let t = DateTime::parse_from_rfc3339(parts.next().unwrap_or("")).expect("DISTCRON_SCHEDULED_AT is RFC 3339");
        assert_eq!(parts.next(), Some("tick"), "DISTCRON_JOB");
        assert_eq!(parts.next(), Some("1"), "DISTCRON_ATTEMPT");
        assert!(parts.next().is_some_and(|id| !id.is_empty()), "DISTCRON_RUN_ID");
        assert_eq!(t.timestamp_subsec_nanos(), 0, "ticks are whole seconds: {line}");
        ticks.push(t.with_timezone(&Utc));
    }
    ticks.sort();
    assert!(ticks.len() >= 9, "expected about 10 ticks in 10 s, got {}: {text}", ticks.len());
    let unique: HashSet<_> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick ran twice: {text}");
    for pair in ticks.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_seconds(), 1, "a tick was missed between {} and {}", pair[0], pair[1]);
    }
    // the run records agree with what the commands saw
    let runs = node.runs("tick");
    let recorded: HashSet<DateTime<Utc>> = runs.iter().map(|r| time(&r["scheduled_at"])).collect();
    for t in &ticks {
        assert!(recorded.contains(t), "tick {t} has no run record");
    }
    assert!(runs.iter().all(|r| status_of(r) == "succeeded"), "{runs:?}");
}

#[test]
fn kill_ends_the_run_and_its_whole_process_group() {
    let node = Node::start(FAST_KILL);
    let pidfile = node.path("grandchild.pid");
    node.create_job(json!({
        "name": "sleeper", "cron_expr": "0 0 1 1 *", "enabled": false,
        "command": format!("sleep 60 & echo $! > {}; sleep 60", pidfile.display()),
    }));
    assert_eq!(node.post_empty("/api/v1/jobs/sleeper/run").status, 202);
    let run = node.wait_run("sleeper", Duration::from_secs(10), |r| status_of(r) == "running").expect("run started");
    let grandchild = wait_until(Duration::from_secs(5), || read_pid(&pidfile)).expect("grandchild pid written");
    assert!(process_alive(grandchild));
    let asked = Utc::now();
    assert_eq!(node.post_empty("/api/v1/jobs/sleeper/kill").status, 202);
    let id = run["id"].as_str().expect("id").to_owned();
    let killed = wait_until(Duration::from_secs(10), || {
        let r = node.get(&format!("/api/v1/runs/{id}"));
        (status_of(&r.body) == "killed").then_some(r.body)
    })
    .expect("run recorded killed");
    let took = time(&killed["ended_at"]) - asked;
    assert!(took < chrono::Duration::milliseconds(1500), "kill took {took}");
    assert!(killed["err"].as_str().is_some_and(|e| e.contains("killed")), "{killed}");
    assert!(
        wait_until(Duration::from_secs(2), || (!process_alive(grandchild)).then_some(())).is_some(),
        "grandchild {grandchild} survived the kill"
    );
}

#[test]
fn timeout_kills_the_run_and_records_timeout() {
    let node = Node::start(FAST_KILL);
    node.create_job(json!({"name": "slow", "cron_expr": "0 0 1 1 *", "command": "sleep 30", "timeout_secs": 1}));
    node.post_empty("/api/v1/jobs/slow/run");
    let run = node.wait_run("slow", Duration::from_secs(10), |r| status_of(r) == "timeout").expect("run timed out");
    let took = time(&run["ended_at"]) - time(&run["started_at"]);
    assert!(took >= chrono::Duration::seconds(1) && took < chrono::Duration::seconds(5), "{took}");
    assert!(run["err"].as_str().is_some_and(|e| e.contains("timed out")), "{run}");
}

#[test]
fn forbid_skips_ticks_while_the_previous_run_is_alive() {
    let node = Node::start(FAST_KILL);
    node.create_job(json!({"name": "f", "cron_expr": "* * * * * *", "command": "sleep 3"}));
    let skipped = node.wait_run("f", Duration::from_secs(10), |r| status_of(r) == "skipped").expect("a skipped tick");
    assert!(skipped["err"].as_str().is_some_and(|e| e.contains("forbid")), "{skipped}");
    node.post_empty("/api/v1/jobs/f/disable");
    let runs = node.runs("f");
    let alive_at_once = runs.iter().filter(|r| status_of(r) == "running").count();
    assert!(alive_at_once <= 1, "forbid allowed {alive_at_once} concurrent runs");
}

#[test]
fn allow_runs_overlapping_ticks() {
    let node = Node::start(FAST_KILL);
    node.create_job(json!({"name": "a", "cron_expr": "* * * * * *", "command": "sleep 3", "concurrency": "allow"}));
    let overlapping = wait_until(Duration::from_secs(10), || {
        let running = node.runs("a").iter().filter(|r| status_of(r) == "running").count();
        (running >= 2).then_some(running)
    });
    node.post_empty("/api/v1/jobs/a/disable");
    assert!(overlapping.is_some(), "allow never ran two at once");
    assert!(node.runs("a").iter().all(|r| status_of(r) != "skipped"));
}

#[test]
fn replace_kills_the_old_run_and_starts_the_new() {
    let node = Node::start(FAST_KILL);
    node.create_job(json!({"name": "r", "cron_expr": "* * * * * *", "command": "sleep 30", "concurrency": "replace"}));
    let replaced = node.wait_run("r", Duration::from_secs(10), |r| status_of(r) == "killed").expect("a replaced run");
    node.post_empty("/api/v1/jobs/r/disable");
    assert!(replaced["err"].as_str().is_some_and(|e| e.contains("replace")), "{replaced}");
    assert!(node.runs("r").iter().all(|r| status_of(r) != "skipped"));
}

#[test]
fn run_now_runs_a_disabled_job_exactly_once() {
    let node = Node::start("");
    let out = node.path("manual.txt");
    node.create_job(json!({"name": "m", "cron_expr": "* * * * * *", "enabled": false,
        "command": format!("echo ran >> {}", out.display())}));
    let r = node.post_empty("/api/v1/jobs/m/run");
    assert_eq!(r.status, 202, "{}", r.text);
    let run = node.wait_run("m", Duration::from_secs(10), |r| status_of(r) == "succeeded").expect("manual run");
    assert_eq!(run["trigger"], "manual");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(&out).expect("output").lines().count(), 1, "disabled job must not tick");
    assert_eq!(node.runs("m").len(), 1);
    assert_eq!(node.post_empty("/api/v1/jobs/nope/run").status, 404);
}

#[test]
fn disabled_jobs_stop_firing_and_keep_their_definition() {
    let node = Node::start("");
    node.create_job(json!({"name": "d", "cron_expr": "* * * * * *", "command": "true", "concurrency": "allow"}));
    node.wait_run("d", Duration::from_secs(10), |r| status_of(r) == "succeeded").expect("ran while enabled");
    let r = node.post_empty("/api/v1/jobs/d/disable");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["enabled"], false);
    std::thread::sleep(Duration::from_millis(1500));
    let before = node.runs("d").len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(node.runs("d").len(), before, "a disabled job fired");
    let job = node.get("/api/v1/jobs/d").body;
    assert_eq!(job["command"], "true");
    assert_eq!(job["next_run_at"], Value::Null);
}

#[test]
fn output_is_capped_to_head_and_tail_with_the_total_size() {
    let node = Node::start("");
    node.create_job(json!({"name": "loud", "cron_expr": "0 0 1 1 *",
        "command": "echo FIRST; head -c 52428800 /dev/zero | tr '\\0' x; echo; echo LAST"}));
    node.post_empty("/api/v1/jobs/loud/run");
    let run = node.wait_run("loud", Duration::from_secs(60), |r| status_of(r) == "succeeded").expect("run finished");
    let full = node.get(&format!("/api/v1/runs/{}", run["id"].as_str().expect("id"))).body;
    assert_eq!(full["output_truncated"], true);
    assert_eq!(full["output_bytes"], 6 + 52_428_800 + 1 + 5);
    let output = full["output"].as_str().expect("output");
    assert!(output.len() <= 256 * 1024 + 200, "kept {} bytes", output.len());
    assert!(output.starts_with("FIRST\n") && output.ends_with("LAST\n"), "head and tail kept");
}

#[test]
fn restart_keeps_jobs_and_marks_interrupted_runs_lost() {
    let mut node = Node::start("");
    node.create_job(json!({"name": "long", "cron_expr": "0 0 1 1 *", "command": "sleep 60"}));
    node.post_empty("/api/v1/jobs/long/run");
    let run = node.wait_run("long", Duration::from_secs(10), |r| status_of(r) == "running").expect("running");
    // let the running record reach the store before the crash
    std::thread::sleep(Duration::from_millis(800));
    node.crash_and_restart();
    let job = node.get("/api/v1/jobs/long");
    assert_eq!(job.status, 200, "job survived the restart");
    assert_eq!(job.body["version"], 1);
    let id = run["id"].as_str().expect("id");
    let lost = wait_until(Duration::from_secs(10), || {
        let r = node.get(&format!("/api/v1/runs/{id}"));
        (status_of(&r.body) == "lost").then_some(r.body)
    })
    .expect("interrupted run marked lost");
    assert!(lost["ended_at"].is_string());
}

#[test]
fn sigterm_lets_runs_finish_within_grace_then_kills_and_exits_zero() {
    let mut node = Node::start("[scheduler]\nshutdown_grace_secs = 1\n[executor]\nkill_grace_ms = 500\n");
    node.create_job(json!({"name": "quick", "cron_expr": "0 0 1 1 *", "command": "sleep 0.3"}));
    node.create_job(json!({"name": "stuck", "cron_expr": "0 0 1 1 *", "command": "sleep 60"}));
    node.post_empty("/api/v1/jobs/quick/run");
    node.post_empty("/api/v1/jobs/stuck/run");
    node.wait_run("stuck", Duration::from_secs(10), |r| status_of(r) == "running").expect("running");
    let started = Instant::now();
    let status = node.signal_and_wait("TERM", Duration::from_secs(15)).expect("node exited after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    node.restart();
    let stuck = node.runs("stuck");
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(status_of(&stuck[0]), "killed", "{stuck:?}");
    assert!(stuck[0]["err"].as_str().is_some_and(|e| e.contains("shut down")));
    let quick = node.runs("quick");
    assert_eq!(status_of(&quick[0]), "succeeded", "{quick:?}");
}
