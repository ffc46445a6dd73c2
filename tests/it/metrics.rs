//! `GET /metrics` (README "Metrics") on real processes: what it says equals what the runs API
//! says, it parses with promtool, missed ticks are counted while the process is frozen, auth,
//! the worker's health listener, and the example alerting rules.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::{require_binary, wait_until, Node};

/// A cron expression that never fires during a test.
const NEVER: &str = "0 0 1 1 *";

fn promtool() -> PathBuf {
    require_binary("DISTCRON_TEST_PROMTOOL", "promtool", "the Debian package prometheus")
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs promtool with `args` (and `stdin`), asserting it succeeds; its output.
fn run_promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> String {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed ({}):\n{text}", out.status);
    text
}

/// `promtool check metrics` on a scrape: it parses and passes the lint.
fn check_metrics(text: &str) {
    let out = run_promtool(&["check", "metrics"], Some(text), Path::new("."));
    assert!(out.trim().is_empty(), "promtool check metrics reported problems:\n{out}\n--- scrape ---\n{text}");
}

fn scrape(node: &Node) -> String {
    let r = node.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    r.text
}

/// Samples of an exposition: the series as written (`name{labels}`) -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

/// What `/metrics` must say about `jobs`, from `/api/v1/runs`: every per-job series, and the
/// number of scheduled runs that started (the start-lag histogram's count).
fn expected_from_api(node: &Node, jobs: &[&str]) -> (HashMap<String, f64>, f64) {
    let mut want = HashMap::new();
    let mut lag_count = 0.0;
    for job in jobs {
        let runs = node.runs(job);
        let mut last_end: Option<(DateTime<Utc>, f64)> = None;
        let mut last_success: Option<DateTime<Utc>> = None;
        for run in runs.iter().filter(|r| r["status"] != "running") {
            let status = run["status"].as_str().unwrap_or_default();
            *want.entry(format!("distcron_runs_total{{job=\"{job}\",status=\"{status}\"}}")).or_insert(0.0) += 1.0;
            if status == "lost" {
                *want.entry(format!("distcron_lost_runs_total{{job=\"{job}\"}}")).or_insert(0.0) += 1.0;
            }
            if status == "missed" {
                let ticks = missed_count(run).unwrap_or(0) as f64;
                *want.entry(format!("distcron_missed_ticks_total{{job=\"{job}\"}}")).or_insert(0.0) += ticks;
            }
            if run["trigger"] == "schedule" && !run["started_at"].is_null() {
                lag_count += 1.0;
            }
            let Some(ended) = time(&run["ended_at"]) else { continue };
            if let (false, Some(ms)) = (run["started_at"].is_null(), run["duration_ms"].as_f64()) {
                if last_end.is_none_or(|(t, _)| ended >= t) {
                    last_end = Some((ended, ms / 1000.0));
                }
            }
            if status == "succeeded" && last_success.is_none_or(|t| ended >= t) {
                last_success = Some(ended);
            }
        }
        if let Some((_, secs)) = last_end {
            want.insert(format!("distcron_last_run_duration_seconds{{job=\"{job}\"}}"), secs);
        }
        if let Some(t) = last_success {
            want.insert(
                format!("distcron_last_success_timestamp_seconds{{job=\"{job}\"}}"),
                t.timestamp_millis() as f64 / 1000.0,
            );
        }
    }
    (want, lag_count)
}

/// Differences between the scrape and the runs API, empty when they agree.
fn mismatches(node: &Node, jobs: &[&str]) -> Vec<String> {
    let (want, lag_count) = expected_from_api(node, jobs);
    let got = samples(&scrape(node));
    let mut out = Vec::new();
    for (series, value) in &want {
        match got.get(series) {
            Some(v) if (v - value).abs() < 1e-6 => {}
            other => out.push(format!("{series}: api says {value}, /metrics says {other:?}")),
        }
    }
    // No per-job series the API does not back (e.g. a status with no run).
    for series in got.keys() {
        let per_job = jobs.iter().any(|j| series.contains(&format!("job=\"{j}\"")));
        if per_job && !want.contains_key(series) {
            out.push(format!("{series}: in /metrics, not in the runs API"));
        }
    }
    let lag = got.get("distcron_start_lag_seconds_count").copied().unwrap_or(0.0);
    if lag != lag_count {
        out.push(format!("start lag count: api says {lag_count}, /metrics says {lag}"));
    }
    out
}

#[test]
fn after_a_scripted_set_of_runs_every_counter_and_timestamp_equals_the_runs_api() {
    let node = Node::start("[executor]\nshell = \"/bin/sh\"\nkill_grace_ms = 200\n");
    let allow = |name: &str, cron: &str, command: &str| json!({ "name": name, "cron_expr": cron, "concurrency": "allow", "command": command });
    node.create_job(allow("ok", NEVER, "true"));
    node.create_job(allow("flaky", NEVER, "exit 3"));
    node.create_job(json!({ "name": "slow", "cron_expr": NEVER, "command": "sleep 30", "timeout_secs": 1 }));
    node.create_job(allow("tick", "* * * * * *", "true"));
    let run_now = |job: &str| assert_eq!(node.post_empty(&format!("/api/v1/jobs/{job}/run")).status, 202);
    for job in ["ok", "ok", "ok", "flaky", "flaky", "slow"] {
        run_now(job);
    }
    let count = |job: &str, status: &str| node.runs(job).iter().filter(|r| r["status"] == status).count();
    let done = wait_until(Duration::from_secs(20), || {
        (count("ok", "succeeded") == 3
            && count("flaky", "failed") == 2
            && count("slow", "timeout") == 1
            && count("tick", "succeeded") >= 3)
            .then_some(())
    });
    assert!(done.is_some(), "the scripted runs did not all end: {}", node.get("/api/v1/runs?limit=100").text);
    assert_eq!(node.post_empty("/api/v1/jobs/tick/disable").status, 200);

    let jobs = ["ok", "flaky", "slow", "tick"];
    let agreed = wait_until(Duration::from_secs(10), || mismatches(&node, &jobs).is_empty().then_some(()));
    assert!(agreed.is_some(), "/metrics disagrees with /api/v1/runs: {:#?}", mismatches(&node, &jobs));

    let text = scrape(&node);
    let got = samples(&text);
    // HTTP by route pattern, never by raw path.
    let runs_posted = r#"distcron_http_requests_total{route="/api/v1/jobs/{name}/run",method="POST",status="202"}"#;
    assert_eq!(got.get(runs_posted), Some(&6.0), "{text}");
    assert!(!text.contains("route=\"/api/v1/jobs/ok"), "a raw path became a label:\n{text}");
    assert_eq!(got.get("distcron_scheduler_planned_jobs"), Some(&3.0), "tick is disabled: {text}");
    assert_eq!(got.get("distcron_session_up"), Some(&1.0));
    check_metrics(&text);

    // A deleted job's series go away; the others stay.
    assert_eq!(node.delete("/api/v1/jobs/flaky").status, 200);
    let gone = wait_until(Duration::from_secs(10), || (!scrape(&node).contains("job=\"flaky\"")).then_some(()));
    assert!(gone.is_some(), "the deleted job's series are still there:\n{}", scrape(&node));
    assert!(scrape(&node).contains(r#"distcron_runs_total{job="ok",status="succeeded"} 3"#));

    // OpenMetrics when asked for.
    let om = node.request("GET", "/metrics", &[("Accept", "application/openmetrics-text; version=1.0.0")], None, true);
    assert_eq!(om.status, 200);
    assert!(om.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")));
    assert!(om.text.ends_with("# EOF\n"), "{}", om.text);
}

/// Ticks of `job` recorded missed, from the runs API (each missed record says how many).
fn missed_in_api(node: &Node, job: &str) -> u64 {
    node.runs(job).iter().filter(|r| r["status"] == "missed").filter_map(missed_count).sum()
}

/// How many ticks one `missed` record stands for (its `err` starts `missed N tick(s)`).
fn missed_count(run: &Value) -> Option<u64> {
    let err = run["err"].as_str()?;
    let digits: String = err.strip_prefix("missed ")?.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn missed_metric(node: &Node, job: &str) -> u64 {
    let series = format!("distcron_missed_ticks_total{{job=\"{job}\"}}");
    samples(&scrape(node)).get(&series).map_or(0, |v| *v as u64)
}

#[test]
fn missed_ticks_grow_by_the_ticks_missed_while_the_process_was_stopped() {
    let node = Node::start("[scheduler]\nmisfire_grace_ms = 300\n[executor]\nshell = \"/bin/sh\"\n");
    node.create_job(json!({ "name": "beat", "cron_expr": "* * * * * *", "concurrency": "allow", "command": "true" }));
    node.wait_run("beat", Duration::from_secs(10), |r| r["status"] == "succeeded").expect("beat runs");
    let (api_before, metric_before) = (missed_in_api(&node, "beat"), missed_metric(&node, "beat"));
    assert_eq!(api_before, metric_before);

    // Frozen for 4 s, well past the 300 ms grace: the ticks of that window cannot run.
    let pid = node.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    std::thread::sleep(Duration::from_secs(4));
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());

    let grown = wait_until(Duration::from_secs(15), || {
        let api = missed_in_api(&node, "beat");
        let metric = missed_metric(&node, "beat");
        (api > api_before && metric - metric_before == api - api_before).then_some(api - api_before)
    });
    let missed = grown.unwrap_or_else(|| {
        panic!(
            "missed ticks: api {} (was {api_before}), /metrics {} (was {metric_before})",
            missed_in_api(&node, "beat"),
            missed_metric(&node, "beat")
        )
    });
    assert!(missed >= 2, "a 4 s freeze of an every-second job misses at least 2 ticks, counted {missed}");
}

#[test]
fn metrics_take_the_api_s_auth_unless_public() {
    let node = Node::start("");
    let anonymous = node.request("GET", "/metrics", &[], None, false);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    assert_eq!(anonymous.body["error"]["code"], "unauthorized");
    assert_eq!(node.get("/metrics").status, 200);

    let public = Node::start("[metrics]\npublic = true\n");
    let anonymous = public.request("GET", "/metrics", &[], None, false);
    assert_eq!(anonymous.status, 200, "{}", anonymous.text);
    assert!(anonymous.text.contains("# TYPE distcron_session_up gauge"), "{}", anonymous.text);
    // Only /metrics: the API keeps its auth.
    assert_eq!(public.request("GET", "/api/v1/jobs", &[], None, false).status, 401);
}

#[test]
fn a_worker_s_health_listener_serves_metrics_and_each_process_reports_what_it_did() {
    let etcd = EtcdServer::start();
    let config = |role: &str| {
        format!(
            "role = \"{role}\"\nallow_local_run_log = true\n[scheduler]\nheartbeat_secs = 1\nshutdown_grace_secs = 2\n\
             [executor]\nshell = \"/bin/sh\"\n[etcd]\nendpoints = {}\nsession_ttl_secs = 3\n",
            etcd.endpoints_toml()
        )
    };
    let worker = Node::start(&config("worker"));
    let master = Node::start(&config("master"));
    master.create_job(json!({ "name": "beat", "cron_expr": "* * * * * *", "concurrency": "allow", "command": "true" }));

    let ran = wait_until(Duration::from_secs(20), || {
        let got = samples(&scrape(&worker));
        (got.get(r#"distcron_runs_total{job="beat",status="succeeded"}"#).copied().unwrap_or(0.0) >= 2.0).then_some(got)
    });
    let got = ran.unwrap_or_else(|| panic!("the worker reports no runs of beat:\n{}", scrape(&worker)));
    assert_eq!(got.get("distcron_session_up"), Some(&1.0));
    assert_eq!(got.get("distcron_scheduler_planned_jobs"), Some(&1.0));
    assert!(got.keys().any(|s| s.starts_with("distcron_claim_duration_seconds_count{store=\"etcd\"}")), "{got:?}");
    let worker_text = scrape(&worker);
    assert!(worker_text.contains(r#"route="/metrics",method="GET",status="200""#), "{worker_text}");
    check_metrics(&worker_text);

    // The master ran nothing: no run series, no scheduler, executors or session; its HTTP.
    let master_text = scrape(&master);
    assert!(!master_text.contains("job=\"beat\""), "{master_text}");
    assert!(!master_text.contains("distcron_session_up") && !master_text.contains("distcron_executors"));
    let created = r#"distcron_http_requests_total{route="/api/v1/jobs",method="POST",status="201"}"#;
    assert_eq!(samples(&master_text).get(created), Some(&1.0), "{master_text}");
    check_metrics(&master_text);
}

#[test]
fn the_example_alerting_rules_pass_promtool() {
    let docs = repo_file("docs");
    let out = run_promtool(&["check", "rules", "alerts.rules.yml"], None, &docs);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_promtool(&["test", "rules", "alerts.test.yml"], None, &docs);
    assert!(out.contains("SUCCESS"), "{out}");
}
