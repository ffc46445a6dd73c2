//! The JSON API over a real node: CRUD with versions, the error table for bad input (and the
//! store left unchanged), runs pagination, preview, health, auth and start-up refusals.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{free_port, Node};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn jobs_crud_with_optimistic_versions() {
    let node = Node::start("");
    let created = node
        .create_job(json!({"name": "backup", "command": "echo hi", "cron_expr": "30 2 * * *", "tz": "Europe/Berlin"}));
    assert_eq!(created["version"], 1);
    assert_eq!(created["dialect"], "distcron");
    assert_eq!(created["concurrency"], "forbid");
    assert_eq!(created["effective_tz"], "Europe/Berlin");
    assert!(created["next_run_at"].as_str().is_some_and(|t| t.ends_with('Z') || t.ends_with("+00:00")));

    let dup =
        node.post("/api/v1/jobs", &json!({"name": "backup", "command": "x", "cron_expr": "* * * * *"}).to_string());
    assert_eq!((dup.status, error_code(&dup.body)), (409, "job_exists"));

    let put = node
        .put("/api/v1/jobs/backup", &json!({"command": "echo v2", "cron_expr": "0 3 * * *", "version": 1}).to_string());
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.body["version"], 2);
    assert_eq!(put.body["created_at"], created["created_at"]);

    let stale = node
        .put("/api/v1/jobs/backup", &json!({"command": "echo v3", "cron_expr": "0 3 * * *", "version": 1}).to_string());
    assert_eq!((stale.status, error_code(&stale.body)), (409, "version_conflict"));
    assert_eq!(node.get("/api/v1/jobs/backup").body["command"], "echo v2", "stale write changed nothing");

    // a job as served can be sent back as is (computed fields are accepted and ignored)
    let served = node.get("/api/v1/jobs/backup").body;
    assert!(served["schedule_description"].as_str().is_some_and(|d| d.contains("03:00")), "{served}");
    let round = node.put("/api/v1/jobs/backup", &served.to_string());
    assert_eq!(round.status, 200, "{}", round.text);
    assert_eq!(round.body["version"], 3);

    let list = node.get("/api/v1/jobs");
    assert_eq!(list.body["jobs"].as_array().map(Vec::len), Some(1));

    let del = node.delete("/api/v1/jobs/backup");
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(node.get("/api/v1/jobs/backup").status, 404);
    assert_eq!(error_code(&node.get("/api/v1/jobs/backup").body), "job_not_found");
}

#[test]
fn bad_inputs_get_documented_errors_and_change_nothing() {
    let node = Node::start("");
    node.create_job(json!({"name": "keep", "command": "true", "cron_expr": "0 * * * *"}));
    let before = node.get("/api/v1/jobs").body;
    let huge =
        format!("{{\"name\":\"big\",\"command\":\"{}\",\"cron_expr\":\"* * * * *\"}}", "x".repeat(2 * 1024 * 1024));
    // (method, path, body, status, error code, field)
    type Case<'a> = (&'a str, &'a str, String, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"x","cron_expr":"61 * * * *"}"#.into(),
            400,
            "invalid_cron_expr",
            Some("cron_expr"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"x","cron_expr":"*/0 * * * *"}"#.into(),
            400,
            "invalid_cron_expr",
            Some("cron_expr"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"x","cron_expr":"0 0 30 2 *"}"#.into(),
            400,
            "invalid_cron_expr",
            Some("cron_expr"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"x","cron_expr":"* * *"}"#.into(),
            400,
            "invalid_cron_expr",
            Some("cron_expr"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"x","cron_expr":"* * * * *","colour":"red"}"#.into(),
            400,
            "invalid_request",
            None,
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":42,"cron_expr":"* * * * *"}"#.into(),
            400,
            "invalid_request",
            None,
        ),
        ("POST", "/api/v1/jobs", r#"{"name":"j","command":"x""#.into(), 400, "invalid_request", None),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"a b","command":"x","cron_expr":"* * * * *"}"#.into(),
            400,
            "invalid_job",
            Some("name"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            format!(r#"{{"name":"{}","command":"x","cron_expr":"* * * * *"}}"#, "n".repeat(129)),
            400,
            "invalid_job",
            Some("name"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"","cron_expr":"* * * * *"}"#.into(),
            400,
            "invalid_job",
            Some("command"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"x","cron_expr":"* * * * *","tz":"Moon/Base"}"#.into(),
            400,
            "invalid_job",
            Some("tz"),
        ),
        (
            "POST",
            "/api/v1/jobs",
            r#"{"name":"j","command":"x","cron_expr":"* * * * *","concurrency":"sometimes"}"#.into(),
            400,
            "invalid_request",
            None,
        ),
        ("POST", "/api/v1/jobs", huge, 413, "payload_too_large", None),
        (
            "PUT",
            "/api/v1/jobs/keep",
            r#"{"command":"y","cron_expr":"* * * * *","version":7}"#.into(),
            409,
            "version_conflict",
            None,
        ),
        (
            "PUT",
            "/api/v1/jobs/keep",
            r#"{"name":"other","command":"y","cron_expr":"* * * * *"}"#.into(),
            400,
            "invalid_job",
            Some("name"),
        ),
    ];
    for (method, path, body, status, code, field) in cases {
        let r = match method {
            "POST" => node.post(path, &body),
            _ => node.put(path, &body),
        };
        let shown: String = body.chars().take(80).collect();
        assert_eq!(r.status, status, "{method} {path} {shown}: {}", r.text.chars().take(300).collect::<String>());
        assert_eq!(error_code(&r.body), code, "{shown}: {}", r.text.chars().take(300).collect::<String>());
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{shown}: message");
        if let Some(f) = field {
            assert_eq!(r.body["error"]["field"], f, "{shown}: {}", r.text);
        }
    }
    let wrong_type =
        node.raw("POST", "/api/v1/jobs", "text/plain", br#"{"name":"j","command":"x","cron_expr":"* * * * *"}"#);
    assert_eq!(
        (wrong_type.status, error_code(&wrong_type.body)),
        (415, "unsupported_media_type"),
        "{}",
        wrong_type.text
    );
    let bad_name = node.get("/api/v1/jobs/bad%20name");
    assert_eq!(bad_name.status, 400, "{}", bad_name.text);
    let unknown = node.get("/api/v1/nothing-here");
    assert_eq!((unknown.status, error_code(&unknown.body)), (404, "not_found"));
    for (q, field) in [
        ("status=happy", "status"),
        ("from=yesterday", "from"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("cursor=zzz", "cursor"),
    ] {
        let r = node.get(&format!("/api/v1/runs?{q}"));
        assert_eq!((r.status, error_code(&r.body)), (400, "invalid_request"), "{q}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{q}");
    }
    assert_eq!(node.get("/api/v1/jobs").body, before, "bad input changed the store");
}

#[test]
fn runs_paginate_with_a_stable_cursor_and_filters() {
    let node = Node::start("");
    node.create_job(json!({"name": "p", "command": "true", "cron_expr": "* * * * * *", "concurrency": "allow"}));
    crate::support::wait_until(Duration::from_secs(20), || (node.runs("p").len() >= 6).then_some(())).expect("runs");
    node.post_empty("/api/v1/jobs/p/disable");
    std::thread::sleep(Duration::from_millis(800));
    let all = node.runs("p");
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let q = if cursor.is_empty() {
            "/api/v1/runs?job=p&limit=2".to_owned()
        } else {
            format!("/api/v1/runs?job=p&limit=2&cursor={cursor}")
        };
        let page = node.get(&q).body;
        for r in page["runs"].as_array().expect("runs") {
            assert!(r.get("output").is_none(), "list omits output");
            seen.push(r["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let ids: Vec<String> = all.iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(seen, ids, "pages cover every run once, newest first");
    let ok = node.get("/api/v1/runs?job=p&status=succeeded&limit=1000").body;
    assert_eq!(ok["runs"].as_array().map(Vec::len), Some(all.len()));
    let none = node.get("/api/v1/runs?job=p&status=failed").body;
    assert_eq!(none["runs"].as_array().map(Vec::len), Some(0));
    let future = node.get("/api/v1/runs?job=p&from=2999-01-01T00:00:00Z").body;
    assert_eq!(future["runs"].as_array().map(Vec::len), Some(0));
    assert_eq!(node.get("/api/v1/runs/does-not-exist").status, 404);
}

#[test]
fn cron_preview_lists_next_times_and_explains_errors() {
    let node = Node::start("");
    let r =
        node.get("/api/v1/cron/preview?expr=30%202%20*%20*%20*&tz=America/New_York&after=2026-03-07T12:00:00Z&count=3");
    assert_eq!(r.status, 200, "{}", r.text);
    let next: Vec<&str> = r.body["next"].as_array().expect("next").iter().filter_map(Value::as_str).collect();
    // 02:30 on the spring-forward day (2026-03-08) does not exist: fixed-time jobs run at 03:00 EDT = 07:00Z
    assert_eq!(next, ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]);
    let bad = node.get("/api/v1/cron/preview?expr=*%2061%20*%20*%20*");
    assert_eq!((bad.status, error_code(&bad.body)), (400, "invalid_cron_expr"));
    assert!(bad.body["error"]["message"].as_str().is_some_and(|m| m.contains("hour")), "{}", bad.text);
    let tz = node.get("/api/v1/cron/preview?expr=*%20*%20*%20*%20*&tz=Nowhere/Land");
    assert_eq!(tz.status, 400);
    let past = node.get("/api/v1/cron/preview?expr=0%200%200%201%201%20*%202020&count=3");
    assert_eq!(past.status, 200, "{}", past.text);
    assert_eq!(past.body["next"], json!([]));
}

#[test]
fn health_reports_backends_and_workers_list_this_node() {
    let node = Node::start("");
    let live = node.get("/api/v1/health/live");
    assert_eq!((live.status, live.body["status"].as_str()), (200, Some("ok")));
    let ready = node.get("/api/v1/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.text);
    for b in ["jobs", "members", "claims", "logs"] {
        assert_eq!(ready.body["backends"][b]["ok"], true, "{b}: {}", ready.text);
    }
    let workers = crate::support::wait_until(Duration::from_secs(10), || {
        let w = node.get("/api/v1/workers").body;
        w["workers"].as_array().filter(|a| !a.is_empty()).cloned()
    })
    .expect("this node is a live worker");
    assert_eq!(workers[0]["state"], "alive");
    assert_eq!(workers[0]["capacity"], 64);
}

#[test]
fn token_guards_reads_and_writes_when_set() {
    let mut node = Node::start("api_token = \"s3cret-token\"\n");
    let denied = node.get("/api/v1/jobs");
    assert_eq!((denied.status, error_code(&denied.body)), (401, "unauthorized"));
    assert_eq!(node.get("/api/v1/health/live").status, 200, "liveness needs no token");
    let page = node.get("/");
    assert_eq!(page.status, 200, "the login page needs no token");
    let legacy = node.get("/job/list");
    assert_eq!(legacy.status, 401);
    assert_eq!(legacy.body["errno"], -1);
    node.token = Some("wrong".into());
    assert_eq!(node.get("/api/v1/jobs").status, 401);
    node.token = Some("s3cret-token".into());
    assert_eq!(node.get("/api/v1/jobs").status, 200);
    assert_eq!(node.get("/job/list").body["errno"], 0);
    assert!(!node.log().contains("s3cret-token"), "the token must never be logged");
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let node = Node::start("");
    let data = node.dir.join("data");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = distcron(&["--listen", &listen, "--data-dir", data.to_str().expect("utf8")], &node.dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in use by another distcron process") && err.contains(&node.pid().to_string()), "{err}");
    assert_eq!(node.get("/api/v1/health/live").status, 200, "the first node keeps running");
}

fn distcron(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run distcron")
}

#[test]
fn startup_refuses_bad_config_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[executor]\npool_sise = 4\n").expect("write");
    let out = distcron(&["--config", cfg.to_str().expect("utf8")], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pool_sise") && err.trim().lines().count() == 1, "{err}");

    let port = free_port().to_string();
    let listen = format!("0.0.0.0:{port}");
    let out = distcron(
        &["--listen", &listen, "--insecure-no-auth", "--data-dir", dir.path().join("d").to_str().expect("utf8")],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("loopback"), "auth off beyond loopback must be refused: {err}");

    let out = distcron(&["--role", "worker", "--data-dir", dir.path().join("d").to_str().expect("utf8")], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("role worker"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(["--data-dir", "d"])
        .current_dir(dir.path())
        .env("DISTCRON_EXECUTOR_POOL_SIZE", "many")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("DISTCRON_EXECUTOR_POOL_SIZE"), "{err}");
}
