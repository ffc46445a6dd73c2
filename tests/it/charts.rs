//! The aggregate endpoints behind the admin page's pictures (README "Pictures") over a real node:
//! values from real runs, bounds, 400s with `field`, and auth (a viewer reads them; no token, 401).

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::Node;

fn field(body: &Value) -> (&str, &str) {
    (body["error"]["code"].as_str().unwrap_or(""), body["error"]["field"].as_str().unwrap_or(""))
}

#[test]
fn timeline_durations_and_sparklines_come_from_the_run_log() {
    let node = Node::start("");
    // Every 2 s: odd runs succeed, even runs fail (a counter in the node's dir).
    let counter = node.path("count");
    let command = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $((n % 2)) -eq 1 ]",
        c = counter.display()
    );
    node.create_job(json!({"name": "flip", "command": command, "cron_expr": "*/2 * * * * *"}));
    node.wait_run("flip", Duration::from_secs(30), |_| {
        node.runs("flip").iter().filter(|r| r["status"] != "running").count() >= 4
    })
    .expect("four finished runs");
    assert_eq!(node.post_empty("/api/v1/jobs/flip/disable").status, 200);
    std::thread::sleep(Duration::from_millis(800));
    let runs = node.runs("flip");

    let tl = node.get("/api/v1/jobs/flip/timeline");
    assert_eq!(tl.status, 200, "{}", tl.text);
    assert_eq!((tl.body["mode"].as_str(), tl.body["window"].as_str()), (Some("ticks"), Some("24h")));
    let cells = tl.body["cells"].as_array().cloned().unwrap_or_default();
    // Every run is on its tick's cell, with its id for the click-through.
    for run in runs.iter().filter(|r| r["trigger"] == "schedule") {
        let cell = cells.iter().find(|c| c["at"] == run["scheduled_at"]).unwrap_or_else(|| panic!("no cell for {run}"));
        assert_eq!(cell["status"], run["status"], "{cell}");
        assert_eq!(cell["attempts"][0]["id"], run["id"]);
    }
    let statuses: Vec<&str> = cells.iter().filter_map(|c| c["status"].as_str()).filter(|s| *s != "none").collect();
    assert!(statuses.windows(2).all(|w| w[0] != w[1]), "alternating: {statuses:?}");
    let ticks: Vec<&str> = cells.iter().filter_map(|c| c["at"].as_str()).collect();
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "oldest first");

    let du = node.get("/api/v1/jobs/flip/durations?window=7d");
    assert_eq!(du.status, 200, "{}", du.text);
    assert_eq!(du.body["bucket_secs"], 7200);
    let buckets = du.body["buckets"].as_array().cloned().unwrap_or_default();
    let counted: u64 = buckets
        .iter()
        .flat_map(|b| b["counts"].as_object().cloned().unwrap_or_default())
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    assert_eq!(counted, runs.len() as u64, "every run in a bucket: {}", du.text);
    assert!(buckets
        .iter()
        .all(|b| b["p50_ms"].as_u64() <= b["p95_ms"].as_u64() && b["p95_ms"].as_u64() <= b["max_ms"].as_u64()));

    node.create_job(json!({"name": "quiet", "command": "true", "cron_expr": "0 0 1 1 *"}));
    let sp = node.get("/api/v1/sparklines?count=3");
    assert_eq!(sp.status, 200, "{}", sp.text);
    let line = sp.body["jobs"]["flip"].as_array().cloned().unwrap_or_default();
    let newest: Vec<&Value> = runs.iter().take(3).rev().map(|r| &r["id"]).collect();
    assert_eq!(line.iter().map(|p| &p["id"]).collect::<Vec<_>>(), newest, "the newest three, oldest first");
    assert!(sp.body["jobs"].get("quiet").is_none(), "a job without runs has no line");
    assert_eq!(node.get("/api/v1/sparklines?q=qui").body["jobs"], json!({}));
}

#[test]
fn forecast_and_load_are_bounded_and_bad_parameters_name_their_field() {
    let node = Node::start("");
    node.create_job(json!({"name": "top-a", "command": "true", "cron_expr": "0 * * * *"}));
    node.create_job(json!({"name": "top-b", "command": "true", "cron_expr": "@hourly"}));
    node.create_job(json!({"name": "off", "command": "true", "cron_expr": "* * * * *", "enabled": false}));
    let fc = node.get("/api/v1/fleet/forecast?hours=3");
    assert_eq!(fc.status, 200, "{}", fc.text);
    let minutes: Vec<u64> =
        fc.body["minutes"].as_array().cloned().unwrap_or_default().iter().filter_map(Value::as_u64).collect();
    assert_eq!(minutes.len(), 180);
    assert_eq!(fc.body["jobs"], 2, "the disabled job is not counted");
    assert_eq!(minutes.iter().sum::<u64>(), 6, "two hourly jobs over 3 hours");
    assert!(minutes.iter().all(|n| *n == 0 || *n == 2), "both fire at the top of the hour: {minutes:?}");
    assert_eq!(fc.body["peak"]["ticks"], 2);
    assert_eq!(node.get("/api/v1/fleet/forecast").body["minutes"].as_array().map(Vec::len), Some(1440));

    let load = node.get("/api/v1/fleet/load");
    assert_eq!(load.status, 200, "{}", load.text);
    let workers = load.body["workers"].as_array().cloned().unwrap_or_default();
    assert_eq!(workers.len(), 1, "{}", load.text);
    assert_eq!((workers[0]["live"].as_bool(), workers[0]["planned_jobs"].as_u64()), (Some(true), Some(2)));
    assert_eq!(workers[0]["planned_share"], 1.0);

    for (path, code, want) in [
        ("/api/v1/fleet/forecast?hours=0", "invalid_request", "hours"),
        ("/api/v1/fleet/forecast?hours=49", "invalid_request", "hours"),
        ("/api/v1/fleet/forecast?hours=x", "invalid_request", "hours"),
        ("/api/v1/jobs/top-a/timeline?window=30d", "invalid_request", "window"),
        ("/api/v1/jobs/top-a/durations?window=1h", "invalid_request", "window"),
        ("/api/v1/sparklines?count=51", "invalid_request", "count"),
        ("/api/v1/jobs/bad%20name/timeline", "invalid_job", "name"),
    ] {
        let r = node.get(path);
        assert_eq!((r.status, field(&r.body)), (400, (code, want)), "{path}: {}", r.text);
    }
    let missing = node.get("/api/v1/jobs/absent/durations");
    assert_eq!((missing.status, field(&missing.body).0), (404, "job_not_found"));
    for path in ["/api/v1/fleet/forecast", "/api/v1/fleet/load", "/api/v1/sparklines", "/api/v1/jobs/top-a/timeline"] {
        let r = node.request("GET", path, &[], None, false);
        assert_eq!(r.status, 401, "{path} needs a token");
    }
}
