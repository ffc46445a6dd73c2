//! HTTP tests over the whole route table (`configure`) with the embedded ports (behind the fault
//! injector where a test needs an outage or a seed-written job): every error
//! code, the jobs/runs/workers/preview/health API, auth, the seed's golden shapes, the page and
//! the listener.

use std::time::Duration;

use actix::prelude::*;
use actix_web::http::{header, Method};
use actix_web::test::{self, TestRequest};
use actix_web::web::{Bytes, Data};
use actix_web::App;
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use serde_json::{json, Value};

use super::{check_listen_auth, configure, serve, AppState, NodeHandles};
use crate::actors::messages::{
    GetLogStatus, GetPoolStatus, GetSchedulerStatus, LogStatus, PoolStatus, SchedulerStatus,
};
use crate::backend::faulty::{Fault, FaultyBackends, ANY};
use crate::backend::{Change, Signal};
use crate::config::Config;
use crate::domain::{Fence, JobName, Revision, RunId, RunRecord, RunStatus, Trigger, WorkerId, WorkerInfo};

struct Resp {
    status: u16,
    headers: header::HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").to_owned()
    }
    fn field(&self) -> Value {
        self.json()["error"]["field"].clone()
    }
    fn header(&self, name: header::HeaderName) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    }
}

struct Harness {
    state: Data<AppState>,
    /// Set for harnesses over the fault injector (outages, seed-written jobs).
    faulty: Option<FaultyBackends>,
    _dir: Option<tempfile::TempDir>,
    token: Option<String>,
}

impl Harness {
    /// Over the embedded backends in a fresh temp dir.
    fn new() -> Self {
        Self::with(Config::default(), None)
    }

    /// Over the embedded backends, with `config` and optionally node actors.
    fn with(config: Config, node: Option<NodeHandles>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backends = crate::backend::Backends::embedded(dir.path()).expect("embedded backends");
        Self { state: Self::state(backends, config, node), faulty: None, _dir: Some(dir), token: None }
    }

    /// Over the embedded backends in a fresh temp dir, each behind a fault injector.
    fn faulty() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let faulty = FaultyBackends::open(dir.path()).expect("embedded backends");
        let state = Self::state(faulty.backends(), Config::default(), None);
        Self { state, faulty: Some(faulty), _dir: Some(dir), token: None }
    }

    fn state(backends: crate::backend::Backends, config: Config, node: Option<NodeHandles>) -> Data<AppState> {
        Data::new(AppState {
            backends,
            config: std::sync::Arc::new(config),
            node,
            node_id: WorkerId("node-1".into()),
            started_at: Utc::now(),
            auth: Default::default(),
            essentials: Default::default(),
            alert_channels: Default::default(),
            metrics: Default::default(),
            live: Default::default(),
            output_followers: crate::http::Followers::new(64),
        })
    }

    fn faults(&self) -> &FaultyBackends {
        self.faulty.as_ref().expect("a harness over the fault injector")
    }

    fn backends(&self) -> &crate::backend::Backends {
        &self.state.backends
    }

    async fn job_count(&self) -> usize {
        self.backends().jobs.snapshot().await.expect("snapshot").0.len()
    }

    async fn call(&self, req: TestRequest) -> Resp {
        let req = match &self.token {
            Some(t) => req.insert_header((header::AUTHORIZATION, format!("Bearer {t}"))),
            None => req,
        };
        let state = self.state.clone();
        let app = test::init_service(App::new().configure(move |c| configure(c, state))).await;
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = test::read_body(res).await;
        Resp { status, headers, body }
    }

    async fn get(&self, path: &str) -> Resp {
        self.call(TestRequest::get().uri(path)).await
    }

    async fn post(&self, path: &str) -> Resp {
        self.call(TestRequest::post().uri(path)).await
    }

    async fn send_json(&self, method: Method, path: &str, body: &Value) -> Resp {
        self.call(TestRequest::default().method(method).uri(path).set_json(body)).await
    }

    async fn raw(&self, method: Method, path: &str, content_type: Option<&str>, body: impl Into<Bytes>) -> Resp {
        let mut req = TestRequest::default().method(method).uri(path).set_payload(body.into());
        if let Some(ct) = content_type {
            req = req.insert_header((header::CONTENT_TYPE, ct));
        }
        self.call(req).await
    }

    async fn form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.call(TestRequest::post().uri(path).set_form(fields)).await
    }

    async fn create(&self, body: Value) -> Value {
        let r = self.send_json(Method::POST, "/api/v1/jobs", &body).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    async fn add_runs(&self, runs: &[RunRecord]) {
        self.backends().logs.append_batch(runs).await.expect("append");
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_764_313_200 + secs, 0).single().expect("valid time")
}

fn run(id: &str, job: &str, status: RunStatus, start: i64, started: bool) -> RunRecord {
    RunRecord {
        id: RunId(id.into()),
        job: JobName::parse(job).expect("name"),
        command: format!("echo {job}"),
        status,
        trigger: Trigger::Schedule,
        scheduled_at: t(start - 1),
        dispatched_at: t(start),
        started_at: started.then(|| t(start)),
        ended_at: (status != RunStatus::Running).then(|| t(start + 2)),
        duration_ms: (started && status != RunStatus::Running).then_some(2000),
        exit_code: None,
        signal: None,
        err: String::new(),
        output: format!("output of {id}\n"),
        output_bytes: 10,
        output_truncated: false,
        worker: WorkerId(if start % 2 == 0 { "w-even".into() } else { "w-odd".into() }),
        attempt: 1,
        fence: Fence(7),
        job_version: None,
        pgid: None,
        proc_start_ticks: None,
        fire_at: None,
        params: None,
    }
}

fn simple_job(name: &str) -> Value {
    json!({"name": name, "command": "echo hi", "cron_expr": "0 7 * * *"})
}

// ---------------------------------------------------------------------------------------------
// Errors

#[actix_web::test]
async fn malformed_bodies_get_invalid_request_naming_the_field_when_known() {
    let h = Harness::new();
    let r = h.raw(Method::POST, "/api/v1/jobs", Some("application/json"), r#"{"name":"j","command":"x""#).await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("EOF")), "{}", r.text());

    let r = h
        .send_json(
            Method::POST,
            "/api/v1/jobs",
            &json!({"name":"j","command":"x","cron_expr":"* * * * *","colour":"red"}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str(), r.field()), (400, "invalid_request", json!("colour")), "{}", r.text());

    let r = h.send_json(Method::POST, "/api/v1/jobs", &json!({"name":"j","command":42,"cron_expr":"* * * * *"})).await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"), "{}", r.text());

    let r = h.send_json(Method::POST, "/api/v1/jobs", &json!({"name":"j","cron_expr":"* * * * *"})).await;
    assert_eq!((r.status, r.code().as_str(), r.field()), (400, "invalid_request", json!("command")), "{}", r.text());

    let r = h
        .send_json(
            Method::POST,
            "/api/v1/jobs",
            &json!({"name":"j","command":"x","cron_expr":"* * * * *","concurrency":"sometimes"}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"), "{}", r.text());
    assert_eq!(h.job_count().await, 0, "nothing stored");
}

#[actix_web::test]
async fn oversized_body_is_413_and_wrong_content_type_is_415() {
    let h = Harness::new();
    let huge = format!(r#"{{"name":"big","command":"{}","cron_expr":"* * * * *"}}"#, "x".repeat(1024 * 1024 + 1));
    let r = h.raw(Method::POST, "/api/v1/jobs", Some("application/json"), huge).await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"), "{}", r.text());

    let body = simple_job("j").to_string();
    let r = h.raw(Method::POST, "/api/v1/jobs", Some("text/plain"), body.clone()).await;
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"), "{}", r.text());
    let r = h.raw(Method::PUT, "/api/v1/jobs/j", None, body).await;
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media_type"), "{}", r.text());
    // +json media types are JSON
    let r =
        h.raw(Method::POST, "/api/v1/jobs", Some("application/merge-patch+json"), simple_job("k").to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[actix_web::test]
async fn invalid_job_fields_are_named_and_bad_cron_is_invalid_cron_expr() {
    let h = Harness::new();
    let cases = [
        (json!({"name":"a b","command":"x","cron_expr":"* * * * *"}), "invalid_job", "name"),
        (json!({"name":"n".repeat(129),"command":"x","cron_expr":"* * * * *"}), "invalid_job", "name"),
        (json!({"command":"x","cron_expr":"* * * * *"}), "invalid_job", "name"),
        (json!({"name":"j","command":"  ","cron_expr":"* * * * *"}), "invalid_job", "command"),
        (json!({"name":"j","command":"x","cron_expr":"* * *"}), "invalid_cron_expr", "cron_expr"),
        (json!({"name":"j","command":"x","cron_expr":"* * * * *","tz":"Moon/Base"}), "invalid_job", "tz"),
        (json!({"name":"j","command":"x","cron_expr":"* * * * *","env":{"DISTCRON_JOB":"x"}}), "invalid_job", "env"),
        (json!({"name":"j","command":"x","cron_expr":"* * * * *","working_dir":"rel"}), "invalid_job", "working_dir"),
        (
            json!({"name":"j","command":"x","cron_expr":"* * * * *","timeout_secs":999_999_999}),
            "invalid_job",
            "timeout_secs",
        ),
    ];
    for (body, code, field) in cases {
        let r = h.send_json(Method::POST, "/api/v1/jobs", &body).await;
        assert_eq!((r.status, r.code(), r.field()), (400, code.to_owned(), json!(field)), "{body}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = h.get("/api/v1/jobs/bad%20name").await;
    assert_eq!((r.status, r.code().as_str(), r.field()), (400, "invalid_job", json!("name")), "{}", r.text());
    let r =
        h.send_json(Method::PUT, "/api/v1/jobs/a", &json!({"name":"b","command":"x","cron_expr":"* * * * *"})).await;
    assert_eq!((r.status, r.code().as_str(), r.field()), (400, "invalid_job", json!("name")), "{}", r.text());
    assert_eq!(h.job_count().await, 0, "nothing stored");
}

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_the_error_shape() {
    let h = Harness::new();
    let r = h.get("/api/v1/nothing-here").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = h.get("/api/v1/jobs/a/b/c").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = h.call(TestRequest::delete().uri("/api/v1/jobs")).await;
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"), "{}", r.text());
    assert_eq!(r.header(header::ALLOW), "GET, POST");
    let r = h.get("/api/v1/jobs/a/run").await;
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    assert_eq!(r.header(header::ALLOW), "POST");
    let r = h.get("/not-a-route").await;
    assert_eq!(r.status, 404);
}

#[actix_web::test]
async fn store_outage_is_503_and_store_corruption_is_an_opaque_500() {
    let h = Harness::faulty();
    h.faults().jobs.fail(ANY, Fault::Down);
    let r = h.get("/api/v1/jobs").await;
    assert_eq!((r.status, r.code().as_str()), (503, "backend_unavailable"));
    assert!(!r.text().contains("connection refused"), "the cause stays in the log: {}", r.text());
    let id = r.header(super::headers::X_REQUEST_ID);
    assert!(!id.is_empty() && r.json()["error"]["request_id"] == id.as_str(), "{}", r.text());
    h.faults().jobs.fail(ANY, Fault::Corrupt);
    let r = h.get("/api/v1/jobs/x").await;
    assert_eq!((r.status, r.code().as_str()), (500, "internal"));
    assert_eq!(r.json()["error"]["message"], "internal error");
    assert!(!r.text().contains("garbage"), "the cause stays in the log: {}", r.text());
    assert_eq!(r.json()["error"]["request_id"], r.header(super::headers::X_REQUEST_ID).as_str());
    // legacy routes answer in their own shape
    let r = h.get("/job/list").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"errno":-1,"msg":"internal error","data":null}"#);
    h.faults().jobs.heal_all();
    assert_eq!(h.get("/api/v1/jobs").await.status, 200, "recovers with the store");
}

// ---------------------------------------------------------------------------------------------
// Auth

fn token_config() -> Config {
    Config { api_token: "s3cret".into(), ..Config::default() }
}

#[actix_web::test]
async fn token_is_required_everywhere_but_the_page_and_liveness() {
    let mut h = Harness::with(token_config(), None);
    let r = h.get("/api/v1/jobs").await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    assert_eq!(r.header(header::WWW_AUTHENTICATE), "Bearer");
    let r = h.get("/api/v1/health/ready").await;
    assert_eq!(r.status, 401);
    let r = h.get("/api/v1/nothing").await;
    assert_eq!(r.status, 401, "unknown routes do not reveal themselves");
    let r = h.get("/job/list").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), r#"{"errno":-1,"msg":"unauthorized","data":null}"#);
    for public in ["/", "/static/app.js", "/app.css", "/api/v1/health/live"] {
        assert_eq!(h.get(public).await.status, 200, "{public}");
    }
    h.token = Some("s3cre".into());
    let r = h.get("/api/v1/jobs").await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("invalid")));
    let r =
        h.call(TestRequest::get().uri("/api/v1/jobs").insert_header((header::AUTHORIZATION, "Basic czNjcmV0"))).await;
    assert_eq!(r.status, 401);
    h.token = Some("s3cret".into());
    assert_eq!(h.get("/api/v1/jobs").await.status, 200);
    assert_eq!(h.get("/job/list").await.json()["errno"], 0);
    assert_eq!(h.send_json(Method::POST, "/api/v1/jobs", &simple_job("a")).await.status, 201);
}

#[actix_web::test]
async fn repeated_failures_from_one_address_get_429_with_retry_after() {
    // One failure per second refills: the 30 quick tries outrun it however slow the machine is.
    let mut config = token_config();
    config.auth.failed_per_sec = 1;
    let h = Harness::with(config, None);
    let from = |ip: &str, token: &str| {
        TestRequest::get()
            .uri("/api/v1/jobs")
            .peer_addr(format!("{ip}:5000").parse().expect("addr"))
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
    };
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(h.call(from("10.1.1.1", "wrong")).await.status);
    }
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let r = h.call(from("10.1.1.1", "s3cret")).await;
    assert_eq!((r.status, r.code().as_str()), (429, "too_many_requests"), "blocked whatever the token");
    assert!(r.header(header::RETRY_AFTER).parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After in seconds");
    let r = h.call(from("10.1.1.2", "s3cret")).await;
    assert_eq!(r.status, 200, "another address is not limited");
    let r = h.call(TestRequest::post().uri("/job/save").peer_addr("10.1.1.1:1".parse().expect("addr"))).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["errno"], -1, "the seed's shape on its routes");
}

#[actix_web::test]
async fn whoami_names_the_token_and_roles_are_enforced() {
    use sha2::Digest;
    let sha = |t: &str| sha2::Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut config = token_config();
    config.auth.tokens = vec![crate::config::NamedToken {
        name: "vera".into(),
        role: crate::domain::AccessRole::Viewer,
        sha256: sha("viewer-token"),
    }];
    let mut h = Harness::with(config, None);
    h.token = Some("s3cret".into());
    assert_eq!(h.get("/api/v1/whoami").await.json(), serde_json::json!({"name": "admin", "role": "admin"}));
    h.token = Some("viewer-token".into());
    assert_eq!(h.get("/api/v1/whoami").await.json(), serde_json::json!({"name": "vera", "role": "viewer"}));
    let r = h.send_json(Method::POST, "/api/v1/jobs", &simple_job("a")).await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    assert_eq!(h.job_count().await, 0);
    assert_eq!(h.get("/api/v1/audit").await.json()["entries"], serde_json::json!([]));
}

#[actix_web::test]
async fn without_a_token_configured_nothing_is_guarded() {
    let h = Harness::new();
    assert_eq!(h.get("/api/v1/jobs").await.status, 200);
    assert_eq!(h.get("/job/list").await.status, 200);
}

#[test]
fn insecure_no_auth_is_refused_beyond_loopback() {
    let cfg = |listen: &str, insecure: bool| Config {
        listen: listen.into(),
        insecure_no_auth: insecure,
        ..Config::default()
    };
    let err = check_listen_auth(&cfg("0.0.0.0:8070", true)).expect_err("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert!(check_listen_auth(&cfg("192.168.1.10:8070", true)).is_err());
    assert!(check_listen_auth(&cfg("0.0.0.0:8070", false)).is_ok(), "a token is resolved later");
    assert!(check_listen_auth(&cfg("127.0.0.1:8070", true)).is_ok());
    assert!(check_listen_auth(&cfg("[::1]:8070", true)).is_ok());
}

#[actix_web::test]
async fn the_perimeter_refuses_foreign_hosts_and_cross_origin_writes_on_every_route() {
    let h = Harness::new();
    let r = h.call(TestRequest::get().uri("/api/v1/jobs").insert_header((header::HOST, "evil.example"))).await;
    assert_eq!((r.status, r.code().as_str()), (421, "host_not_allowed"));
    let cross = |req: TestRequest| {
        req.insert_header((header::ORIGIN, "https://evil.example")).insert_header(("sec-fetch-site", "cross-site"))
    };
    for (method, path) in [
        (Method::POST, "/api/v1/jobs"),
        (Method::POST, "/job/save"),
        (Method::DELETE, "/api/v1/jobs/a"),
        (Method::POST, "/nothing"),
    ] {
        let r = h.call(cross(TestRequest::default().method(method.clone()).uri(path))).await;
        assert_eq!((r.status, r.code().as_str()), (403, "cross_origin_refused"), "{method} {path}");
        assert_eq!(r.header(header::CACHE_CONTROL), "no-store");
    }
    assert_eq!(h.job_count().await, 0);
    let r = h.call(cross(TestRequest::get().uri("/api/v1/jobs"))).await;
    assert_eq!(r.status, 200, "a read is no state change");
    let same = TestRequest::post()
        .uri("/api/v1/jobs")
        .insert_header((header::HOST, "127.0.0.1:8070"))
        .insert_header((header::ORIGIN, "http://127.0.0.1:8070"))
        .set_json(simple_job("a"));
    assert_eq!(h.call(same).await.status, 201, "the page's own origin");
}

#[actix_web::test]
async fn every_response_has_no_store_nosniff_and_a_request_id() {
    let h = Harness::new();
    for path in ["/api/v1/jobs", "/api/v1/nothing", "/job/list", "/api/v1/health/live"] {
        let r = h.get(path).await;
        assert_eq!(r.header(header::CACHE_CONTROL), "no-store", "{path}");
        assert_eq!(r.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        assert_eq!(r.header(super::headers::X_REQUEST_ID).len(), 32, "{path}");
    }
    let page = h.get("/").await;
    assert_eq!(page.header(header::CACHE_CONTROL), "no-cache", "the page keeps its own");
    assert!(page.header(header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
}

// ---------------------------------------------------------------------------------------------
// Jobs

#[actix_web::test]
async fn job_crud_round_trip_increments_versions() {
    let h = Harness::new();
    let created =
        h.create(json!({"name":"backup","command":"echo hi","cron_expr":"30 2 * * *","tz":"Europe/Berlin"})).await;
    assert_eq!(created["version"], 1);
    assert_eq!(created["dialect"], "distcron");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["concurrency"], "forbid");
    assert_eq!(created["effective_tz"], "Europe/Berlin");
    assert_eq!(created["env"], json!({}));
    assert!(created.get("working_dir").is_none());
    assert!(created["next_run_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{created}");

    let dup = h.send_json(Method::POST, "/api/v1/jobs", &simple_job("backup")).await;
    assert_eq!((dup.status, dup.code().as_str()), (409, "job_exists"));

    let got = h.get("/api/v1/jobs/backup").await;
    assert_eq!((got.status, got.json()), (200, created.clone()));

    // a job read from the API can be sent back as is
    let mut back = created.clone();
    back["command"] = json!("echo v2");
    back.as_object_mut().expect("object").remove("effective_tz");
    let put = h.send_json(Method::PUT, "/api/v1/jobs/backup", &back).await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!((put.json()["version"].clone(), put.json()["command"].clone()), (json!(2), json!("echo v2")));
    assert_eq!(put.json()["created_at"], created["created_at"]);

    let stale = h
        .send_json(Method::PUT, "/api/v1/jobs/backup", &json!({"command":"x","cron_expr":"* * * * *","version":1}))
        .await;
    assert_eq!((stale.status, stale.code().as_str()), (409, "version_conflict"));
    assert!(stale.json()["error"]["message"].as_str().is_some_and(|m| m.contains('1') && m.contains('2')));

    let replace =
        h.send_json(Method::PUT, "/api/v1/jobs/backup", &json!({"command":"x","cron_expr":"* * * * *"})).await;
    assert_eq!(replace.json()["version"], 3);
    assert!(replace.json().get("tz").is_none(), "replace without tz resets it");
    assert_eq!(replace.json()["effective_tz"], "UTC");

    let upsert = h.send_json(Method::PUT, "/api/v1/jobs/fresh", &json!({"command":"x","cron_expr":"* * * * *"})).await;
    assert_eq!((upsert.status, upsert.json()["version"].clone()), (200, json!(1)));
    let absent = h
        .send_json(Method::PUT, "/api/v1/jobs/absent", &json!({"command":"x","cron_expr":"* * * * *","version":1}))
        .await;
    assert_eq!((absent.status, absent.code().as_str()), (404, "job_not_found"));

    let list = h.get("/api/v1/jobs").await.json();
    let names: Vec<&str> = list["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(names, ["backup", "fresh"]);
    let filtered = h.get("/api/v1/jobs?q=fre").await.json();
    assert_eq!(filtered["jobs"].as_array().map(Vec::len), Some(1));

    let stale_del = h.call(TestRequest::delete().uri("/api/v1/jobs/backup?version=1")).await;
    assert_eq!((stale_del.status, stale_del.code().as_str()), (409, "version_conflict"));
    let bad_version = h.call(TestRequest::delete().uri("/api/v1/jobs/backup?version=x")).await;
    assert_eq!((bad_version.status, bad_version.field()), (400, json!("version")));
    let del = h.call(TestRequest::delete().uri("/api/v1/jobs/backup?version=3")).await;
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(del.json()["deleted"]["name"], "backup");
    let gone = h.get("/api/v1/jobs/backup").await;
    assert_eq!((gone.status, gone.code().as_str()), (404, "job_not_found"));
    let again = h.call(TestRequest::delete().uri("/api/v1/jobs/backup")).await;
    assert_eq!((again.status, again.code().as_str()), (404, "job_not_found"));
}

#[actix_web::test]
async fn job_list_carries_each_jobs_newest_run() {
    let h = Harness::new();
    h.create(simple_job("ran")).await;
    h.create(simple_job("idle")).await;
    let mut newest = run("r3", "ran", RunStatus::Running, 30, true);
    newest.output = "not in the list".into();
    h.add_runs(&[
        run("r1", "ran", RunStatus::Succeeded, 10, true),
        newest,
        run("r2", "ran", RunStatus::Failed, 20, true),
    ])
    .await;
    let list = h.get("/api/v1/jobs").await.json();
    let jobs = list["jobs"].as_array().expect("jobs");
    let (idle, ran) = (&jobs[0], &jobs[1]);
    assert_eq!(idle["last_run"], Value::Null);
    assert_eq!(ran["last_run"]["id"], "r3");
    assert_eq!(ran["last_run"]["status"], "running");
    assert_eq!(ran["last_run"]["started_at"], json!(t(30)));
    assert_eq!(ran["last_run"]["duration_ms"], Value::Null);
    assert!(ran["last_run"].get("output").is_none(), "{ran}");
    assert!(list.get("last_run_error").is_none());
    // the single-job routes keep their shape
    assert!(h.get("/api/v1/jobs/ran").await.json().get("last_run").is_none());
}

#[actix_web::test]
async fn job_list_is_served_without_last_runs_when_the_log_store_is_down() {
    let h = Harness::faulty();
    h.create(simple_job("j")).await;
    h.faults().logs.fail(ANY, Fault::Down);
    let r = h.get("/api/v1/jobs").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["jobs"][0]["name"], "j");
    assert_eq!(body["jobs"][0]["last_run"], Value::Null);
    assert!(body["last_run_error"].as_str().is_some_and(|e| e.contains("last runs unavailable")), "{body}");
}

#[actix_web::test]
async fn enable_and_disable_bump_the_version_and_clear_next_run() {
    let h = Harness::new();
    h.create(simple_job("j")).await;
    let off = h.post("/api/v1/jobs/j/disable").await;
    assert_eq!(off.status, 200, "{}", off.text());
    let off = off.json();
    assert_eq!(
        (off["enabled"].clone(), off["version"].clone(), off["next_run_at"].clone()),
        (json!(false), json!(2), Value::Null)
    );
    let on = h.post("/api/v1/jobs/j/enable").await.json();
    assert_eq!((on["enabled"].clone(), on["version"].clone()), (json!(true), json!(3)));
    assert!(on["next_run_at"].is_string());
    let r = h.post("/api/v1/jobs/nope/enable").await;
    assert_eq!((r.status, r.code().as_str()), (404, "job_not_found"));
}

#[actix_web::test]
async fn a_job_written_by_the_seed_can_be_toggled() {
    let h = Harness::faulty();
    // As the seed wrote it: no version, no dialect.
    h.faults()
        .store_raw_job("old", r#"{"name":"old","command":"true","cron_expr":"0 12 1 1 * 2030"}"#)
        .expect("seed job");
    let r = h.post("/api/v1/jobs/old/disable").await.json();
    assert_eq!(
        (r["enabled"].clone(), r["version"].clone(), r["dialect"].clone()),
        (json!(false), json!(1), json!("seed"))
    );
}

async fn next_change(stream: &mut crate::backend::WatchStream) -> Change {
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("watch event in time");
    ev.expect("stream open").expect("no error").change
}

#[actix_web::test]
async fn run_now_and_kill_publish_signals() {
    let h = Harness::new();
    h.create(simple_job("j")).await;
    let (_, rev) = h.backends().jobs.snapshot().await.expect("snapshot");
    let mut watch = h.backends().jobs.watch(Revision(rev.0 + 1)).await.expect("watch");

    let r = h.post("/api/v1/jobs/j/run").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let request = r.json()["request"].as_str().expect("request id").to_owned();
    assert_eq!(r.json()["job"], "j");
    assert_eq!(
        next_change(&mut watch).await,
        Change::Signal(Signal::RunNow {
            job: JobName::parse("j").expect("name"),
            request,
            env: Default::default(),
            retry: None
        })
    );
    let r = h.post("/api/v1/jobs/missing/run").await;
    assert_eq!((r.status, r.code().as_str()), (404, "job_not_found"));

    let r = h.post("/api/v1/jobs/j/kill").await;
    assert_eq!((r.status, r.json()), (202, json!({"job": "j"})));
    assert_eq!(
        next_change(&mut watch).await,
        Change::Signal(Signal::Kill { job: JobName::parse("j").expect("name"), run: None })
    );

    h.add_runs(&[run("r-live", "j", RunStatus::Running, 10, true), run("r-done", "j", RunStatus::Succeeded, 5, true)])
        .await;
    let r = h.post("/api/v1/runs/r-live/kill").await;
    assert_eq!((r.status, r.json()), (202, json!({"run": "r-live", "job": "j"})));
    assert_eq!(
        next_change(&mut watch).await,
        Change::Signal(Signal::Kill { job: JobName::parse("j").expect("name"), run: Some(RunId("r-live".into())) })
    );
    let r = h.post("/api/v1/runs/r-done/kill").await;
    assert_eq!((r.status, r.code().as_str()), (409, "run_not_running"));
    let r = h.post("/api/v1/runs/r-nope/kill").await;
    assert_eq!((r.status, r.code().as_str()), (404, "run_not_found"));
}

// ---------------------------------------------------------------------------------------------
// Runs

async fn seeded_runs() -> Harness {
    let h = Harness::new();
    h.add_runs(&[
        run("r1", "a", RunStatus::Succeeded, 1, true),
        run("r2", "a", RunStatus::Failed, 2, true),
        run("r3", "b", RunStatus::Succeeded, 3, true),
        run("r4", "a", RunStatus::Running, 4, true),
        run("r5", "a", RunStatus::Skipped, 5, false),
    ])
    .await;
    h
}

fn ids(page: &Value) -> Vec<String> {
    page["runs"].as_array().expect("runs").iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect()
}

#[actix_web::test]
async fn runs_filter_and_paginate_newest_first_without_output() {
    let h = seeded_runs().await;
    let all = h.get("/api/v1/runs").await.json();
    assert_eq!(ids(&all), ["r5", "r4", "r3", "r2", "r1"]);
    assert_eq!(all["next_cursor"], Value::Null);
    assert!(all["runs"].as_array().expect("runs").iter().all(|r| r.get("output").is_none() && r.get("err").is_some()));

    let p1 = h.get("/api/v1/runs?job=a&limit=2").await.json();
    assert_eq!(ids(&p1), ["r5", "r4"]);
    let cursor = p1["next_cursor"].as_str().expect("cursor").to_owned();
    let p2 = h.get(&format!("/api/v1/runs?job=a&limit=2&cursor={cursor}")).await.json();
    assert_eq!(ids(&p2), ["r2", "r1"]);
    assert_eq!(p2["next_cursor"], Value::Null);

    assert_eq!(ids(&h.get("/api/v1/runs?status=succeeded").await.json()), ["r3", "r1"]);
    assert_eq!(ids(&h.get("/api/v1/runs?worker=w-even").await.json()), ["r4", "r2"]);
    let from = t(2).to_rfc3339();
    let to = t(4).to_rfc3339();
    let window = h.get(&format!("/api/v1/runs?from={}&to={}", enc(&from), enc(&to))).await.json();
    assert_eq!(ids(&window), ["r3", "r2"]);
    // empty parameters (as an HTML form sends them) mean "no filter"
    assert_eq!(ids(&h.get("/api/v1/runs?job=&status=&worker=&from=&to=&cursor=").await.json()).len(), 5);

    let one = h.get("/api/v1/runs/r3").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["output"], "output of r3\n");
    assert_eq!(one.json()["started_at"], "2025-11-28T07:00:03Z");
    let r = h.get("/api/v1/runs/nope").await;
    assert_eq!((r.status, r.code().as_str()), (404, "run_not_found"));
}

#[actix_web::test]
async fn job_stats_cover_the_window_and_validate_it() {
    let h = Harness::new();
    let recent = |id: &str, status: RunStatus, secs_ago: i64| {
        let mut r = run(id, "a", status, 0, true);
        let start = Utc::now() - chrono::Duration::seconds(secs_ago);
        r.started_at = Some(start);
        r.dispatched_at = start;
        r
    };
    h.add_runs(&[
        recent("s1", RunStatus::Succeeded, 60),
        recent("s2", RunStatus::Succeeded, 120),
        recent("f1", RunStatus::Failed, 180),
        recent("old", RunStatus::Failed, 3 * 3600),
        run("ancient", "a", RunStatus::Succeeded, 1, true),
    ])
    .await;
    let s = h.get("/api/v1/jobs/a/stats?window=1h").await;
    assert_eq!(s.status, 200, "{}", s.text());
    let s = s.json();
    assert_eq!((s["runs"].as_u64(), s["succeeded"].as_u64(), s["failed"].as_u64()), (Some(3), Some(2), Some(1)));
    assert!((s["success_rate"].as_f64().expect("rate") - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!((s["p50_ms"].as_u64(), s["p95_ms"].as_u64()), (Some(2000), Some(2000)));
    assert_eq!((s["job"].as_str(), s["window"].as_str()), (Some("a"), Some("1h")));
    assert!(s["last_success"].is_string() && s["last_failure"].is_string());
    let day = h.get("/api/v1/jobs/a/stats").await.json();
    assert_eq!((day["window"].as_str(), day["runs"].as_u64()), (Some("24h"), Some(4)), "24h by default");
    let none = h.get("/api/v1/jobs/nobody/stats").await.json();
    assert_eq!((none["runs"].as_u64(), none["success_rate"].clone()), (Some(0), Value::Null));
    let bad = h.get("/api/v1/jobs/a/stats?window=1w").await;
    assert_eq!((bad.status, bad.code().as_str(), bad.field()), (400, "invalid_request", json!("window")));
}

fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[actix_web::test]
async fn runs_reject_bad_filters_naming_the_parameter() {
    let h = seeded_runs().await;
    for (q, field) in [
        ("status=happy", "status"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zzz", "cursor"),
        ("job=a%20b", "job"),
    ] {
        let r = h.get(&format!("/api/v1/runs?{q}")).await;
        assert_eq!(
            (r.status, r.code().as_str(), r.field()),
            (400, "invalid_request", json!(field)),
            "{q}: {}",
            r.text()
        );
    }
    let r = h.get("/api/v1/runs?status=happy").await;
    assert!(r.text().contains("succeeded") && r.text().contains("missed"), "lists valid statuses: {}", r.text());
    assert_eq!(h.get("/api/v1/runs?limit=1000").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Workers, preview, health

fn worker(id: &str, address: &str) -> WorkerInfo {
    WorkerInfo {
        id: WorkerId(id.into()),
        hostname: format!("{id}.example"),
        address: address.into(),
        version: "0.1.0".into(),
        started_at: t(0),
        running: 1,
        capacity: 64,
        last_heartbeat: t(5),
        labels: [("zone".to_owned(), format!("z-{id}"))].into_iter().collect(),
        api_addr: None,
    }
}

#[actix_web::test]
async fn workers_are_listed_alive() {
    let h = Harness::new();
    h.backends().members.join(&worker("w1", "10.0.0.1")).await.expect("join");
    let r = h.get("/api/v1/workers").await.json();
    assert_eq!(
        r,
        json!({"workers": [{
            "id": "w1", "hostname": "w1.example", "address": "10.0.0.1", "version": "0.1.0",
            "started_at": "2025-11-28T07:00:00Z", "running": 1, "capacity": 64,
            "last_heartbeat": "2025-11-28T07:00:05Z", "labels": {"zone": "z-w1"}, "state": "alive"
        }]})
    );
}

#[actix_web::test]
async fn preview_lists_increasing_times_and_validates_every_parameter() {
    let h = Harness::new();
    let r =
        h.get("/api/v1/cron/preview?expr=0%207%20*%20*%20*&tz=Europe/Berlin&after=2026-11-27T00:00:00Z&count=3").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        (body["expr"].clone(), body["tz"].clone(), body["dialect"].clone()),
        (json!("0 7 * * *"), json!("Europe/Berlin"), json!("distcron"))
    );
    let next: Vec<DateTime<Utc>> = body["next"]
        .as_array()
        .expect("next")
        .iter()
        .map(|v| v.as_str().expect("string").parse().expect("RFC 3339"))
        .collect();
    assert_eq!(next.len(), 3);
    assert!(next[0] > t(0) - chrono::Duration::days(400) && next.windows(2).all(|w| w[0] < w[1]), "{next:?}");
    assert!(body["next"][0].as_str().is_some_and(|s| s.ends_with('Z')));
    assert!(body.get("fields").is_some());
    let seed = h.get("/api/v1/cron/preview?expr=0%2012%201%201%20*%202030&dialect=seed").await;
    assert_eq!((seed.status, seed.json()["dialect"].clone()), (200, json!("seed")));
    let default_count = h.get("/api/v1/cron/preview?expr=*%20*%20*%20*%20*").await.json();
    assert_eq!(default_count["next"].as_array().map(Vec::len), Some(5));
    assert_eq!(default_count["tz"], "UTC");

    let bad = h.get("/api/v1/cron/preview?expr=*%20*").await;
    assert_eq!((bad.status, bad.code().as_str(), bad.field()), (400, "invalid_cron_expr", json!("expr")));
    for (q, field) in [
        ("", "expr"),
        ("expr=*%20*%20*%20*%20*&tz=Nowhere/Land", "tz"),
        ("expr=*%20*%20*%20*%20*&after=soon", "after"),
        ("expr=*%20*%20*%20*%20*&count=0", "count"),
        ("expr=*%20*%20*%20*%20*&count=101", "count"),
        ("expr=*%20*%20*%20*%20*&dialect=quartz", "dialect"),
    ] {
        let r = h.get(&format!("/api/v1/cron/preview?{q}")).await;
        assert_eq!(
            (r.status, r.code().as_str(), r.field()),
            (400, "invalid_request", json!(field)),
            "{q}: {}",
            r.text()
        );
    }
}

#[actix_web::test]
async fn preview_flags_fire_times_on_dst_days() {
    let h = Harness::new();
    let r = h
        .get("/api/v1/cron/preview?expr=30%202%20*%20*%20*&tz=America/New_York&after=2026-03-07T00:00:00Z&count=3")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["next"], json!(["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]));
    assert_eq!(body["dst"][0], Value::Null);
    assert_eq!(
        body["dst"][1],
        json!({"at": "2026-03-08T07:00:00Z", "local_before": "2026-03-08T02:00:00", "local_after": "2026-03-08T03:00:00",
               "offset_before_secs": -18000, "offset_after_secs": -14400})
    );
    assert_eq!(body["dst"][2], Value::Null);
    let utc = h.get("/api/v1/cron/preview?expr=30%202%20*%20*%20*&tz=UTC&count=4").await.json();
    assert_eq!(utc["dst"], json!([null, null, null, null]));
}

#[actix_web::test]
async fn preview_reads_day_tokens_and_rejects_bad_ones_with_400() {
    let h = Harness::new();
    let r = h
        .get("/api/v1/cron/preview?expr=0%2018%20*%20*%205L&tz=Europe/Berlin&after=2026-03-01T00:00:00Z&count=2")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["next"], json!(["2026-03-27T17:00:00Z", "2026-04-24T16:00:00Z"]));
    assert_eq!(body["description"], "at 18:00 on the last Friday of the month");
    assert_eq!(body["fields"]["day_of_week_special"], json!(["5L"]));
    for expr in ["0%200%20*%20*%200%231", "0%200%2032W%20*%20*", "0%200%20L-40%20*%20*"] {
        let bad = h.get(&format!("/api/v1/cron/preview?expr={expr}")).await;
        assert_eq!((bad.status, bad.code().as_str(), bad.field()), (400, "invalid_cron_expr", json!("expr")), "{expr}");
    }
    let bad =
        h.send_json(Method::POST, "/api/v1/jobs", &json!({"name":"j","command":"x","cron_expr":"0 0 L-40 * *"})).await;
    assert_eq!((bad.status, bad.field()), (400, json!("cron_expr")), "{}", bad.text());
    assert!(bad.text().contains("out of range 0-30"), "{}", bad.text());
}

#[actix_web::test]
async fn jitter_shows_in_the_job_and_the_preview_and_is_validated() {
    let h = Harness::new();
    let offset = i64::from(crate::domain::jitter_offset("spread", 600));
    let job = h.create(json!({"name":"spread","command":"x","cron_expr":"0 * * * *","jitter_secs":600})).await;
    assert_eq!((job["jitter_secs"].clone(), job["jitter_offset_secs"].clone()), (json!(600), json!(offset)));
    let next: DateTime<Utc> = job["next_run_at"].as_str().expect("next_run_at").parse().expect("RFC 3339");
    assert_eq!(next.timestamp().rem_euclid(3600), offset, "{job}");
    let r = h.get("/api/v1/cron/preview?expr=0%20*%20*%20*%20*&after=2026-01-01T00:00:00Z&count=2&name=spread&jitter_secs=600").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    // The ticks whose fire time (tick + offset) comes after `after`: the 00:00 tick fires at
    // 00:00 + offset, so it is the first.
    assert!(offset > 0, "the name's offset is not 0 (else the case below proves nothing)");
    assert_eq!(body["next"], json!(["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"]));
    let first: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("RFC 3339");
    let want: Vec<String> = [0, 1]
        .iter()
        .map(|h| first + chrono::Duration::seconds(h * 3600 + offset))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    assert_eq!(body["fire_at"], json!(want));
    assert_eq!(body["jitter_offset_secs"], offset);
    for (q, field) in [
        ("expr=0%20*%20*%20*%20*&jitter_secs=60", "name"),
        ("expr=0%20*%20*%20*%20*&jitter_secs=3601&name=a", "jitter_secs"),
        ("expr=0%20*%20*%20*%20*&jitter_secs=60&name=a%20b", "name"),
    ] {
        let r = h.get(&format!("/api/v1/cron/preview?{q}")).await;
        assert_eq!((r.status, r.field()), (400, json!(field)), "{q}: {}", r.text());
    }
    let bad = h
        .send_json(
            Method::POST,
            "/api/v1/jobs",
            &json!({"name":"b","command":"x","cron_expr":"* * * * *","jitter_secs":60}),
        )
        .await;
    assert_eq!((bad.status, bad.field()), (400, json!("jitter_secs")), "{}", bad.text());
}

#[actix_web::test]
async fn liveness_is_ok_and_readiness_reports_each_backend() {
    let h = Harness::faulty();
    let live = h.get("/api/v1/health/live").await;
    assert_eq!((live.status, live.json()), (200, json!({"status": "ok"})));
    let ready = h.get("/api/v1/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["status"], "ready");
    assert_eq!((body["role"].clone(), body["node_id"].clone()), (json!("all"), json!("node-1")));
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_secs"].is_i64());
    for b in ["jobs", "members", "claims", "logs"] {
        assert_eq!(body["backends"][b], {
            let kind = &h.backends().kinds;
            let kind = match b {
                "jobs" => kind.jobs,
                "members" => kind.members,
                "claims" => kind.claims,
                _ => kind.logs,
            };
            let mut v = json!({"kind": kind, "ok": true});
            if b == "logs" {
                v["spool_bytes"] = json!(0);
                v["spool_records"] = json!(0);
                v["buffered"] = json!(0);
                v["dead_lettered"] = json!(0);
            }
            v
        });
    }
    assert_eq!(
        (body["scheduler"].clone(), body["executors"].clone()),
        (Value::Null, Value::Null),
        "no actors on this node"
    );
    assert_eq!(h.get("/api/v1/health").await.json()["status"], "ready");

    h.faults().logs.fail(ANY, Fault::Down);
    let degraded = h.get("/api/v1/health/ready").await;
    assert_eq!((degraded.status, degraded.json()["status"].clone()), (200, json!("degraded")));
    assert_eq!(degraded.json()["backends"]["logs"]["ok"], false);
    assert!(degraded.json()["backends"]["logs"]["error"].as_str().is_some_and(|e| e.contains("connection refused")));

    h.faults().jobs.fail(ANY, Fault::Down);
    let down = h.get("/api/v1/health/ready").await;
    assert_eq!((down.status, down.json()["status"].clone()), (503, json!("unavailable")));
    assert_eq!(down.json()["backends"]["jobs"]["ok"], false);
}

/// Answers the three status queries like a node's actors would.
struct FakeNode {
    synced: bool,
}

impl Actor for FakeNode {
    type Context = Context<Self>;
}

impl Handler<GetSchedulerStatus> for FakeNode {
    type Result = MessageResult<GetSchedulerStatus>;
    fn handle(&mut self, _: GetSchedulerStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(SchedulerStatus {
            planned_jobs: 3,
            running: 1,
            revision: 42,
            synced: self.synced,
            ..Default::default()
        })
    }
}

impl Handler<GetPoolStatus> for FakeNode {
    type Result = MessageResult<GetPoolStatus>;
    fn handle(&mut self, _: GetPoolStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(PoolStatus { size: 64, busy: 1, queued: 0, queue_capacity: 10_000, restarts: 0 })
    }
}

impl Handler<crate::actors::messages::GetInvalidJobs> for FakeNode {
    type Result = MessageResult<crate::actors::messages::GetInvalidJobs>;
    fn handle(&mut self, _: crate::actors::messages::GetInvalidJobs, _: &mut Context<Self>) -> Self::Result {
        MessageResult(vec![crate::domain::InvalidJob {
            name: JobName::parse("broken").expect("name"),
            reason: "cron_expr: bad".into(),
        }])
    }
}

impl Handler<GetLogStatus> for FakeNode {
    type Result = MessageResult<GetLogStatus>;
    fn handle(&mut self, _: GetLogStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(LogStatus {
            buffered_bytes: 0,
            buffered: 2,
            spool_bytes: 100,
            spool_records: 1,
            store_ok: true,
            last_error: None,
            written: 9,
            dead_lettered: 0,
        })
    }
}

fn node_handles(synced: bool) -> NodeHandles {
    let addr = FakeNode { synced }.start();
    NodeHandles {
        scheduler: addr.clone().recipient(),
        pool: addr.clone().recipient(),
        log: addr.clone().recipient(),
        watch: addr.recipient(),
    }
}

#[actix_web::test]
async fn readiness_includes_the_node_actors_status() {
    let h = Harness::with(Config::default(), Some(node_handles(true)));
    let body = h.get("/api/v1/health/ready").await.json();
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(
        (body["scheduler"]["planned_jobs"].clone(), body["scheduler"]["synced"].clone()),
        (json!(3), json!(true))
    );
    assert_eq!(body["executors"]["size"], 64);
    assert_eq!(body["invalid_jobs"], json!([{ "name": "broken", "reason": "cron_expr: bad" }]), "{body}");
    let logs = &body["backends"]["logs"];
    assert_eq!(
        (logs["spool_bytes"].clone(), logs["spool_records"].clone(), logs["buffered"].clone()),
        (json!(100), json!(1), json!(2))
    );

    let h = Harness::with(Config::default(), Some(node_handles(false)));
    let body = h.get("/api/v1/health/ready").await.json();
    assert_eq!(body["status"], "degraded", "an unsynced scheduler is degraded: {body}");
}

// ---------------------------------------------------------------------------------------------
// Legacy (seed) routes: exact bodies

#[actix_web::test]
async fn seed_save_list_delete_have_the_seed_shapes() {
    let h = Harness::new();
    assert_eq!(h.get("/job/list").await.text(), r#"{"errno":0,"msg":"success","data":[]}"#);
    let job = r#"{"name":"job1","command":"echo hello","cron_expr":"*/5 * * * * *"}"#;
    let r = h.form("/job/save", &[("job", job)]).await;
    assert_eq!((r.status, r.text()), (200, r#"{"errno":0,"msg":"success","data":null}"#.to_owned()));
    let r = h
        .form("/job/save", &[("job", r#"{"name":"job1","command":"echo v2","cron_expr":"0 * * * *","extra":true}"#)])
        .await;
    assert_eq!(
        r.text(),
        r#"{"errno":0,"msg":"success","data":{"name":"job1","command":"echo hello","cron_expr":"*/5 * * * * *"}}"#
    );
    assert_eq!(
        h.get("/job/list").await.text(),
        r#"{"errno":0,"msg":"success","data":[{"name":"job1","command":"echo v2","cron_expr":"0 * * * *"}]}"#
    );
    let api = h.get("/api/v1/jobs/job1").await.json();
    assert_eq!((api["dialect"].clone(), api["version"].clone()), (json!("seed"), json!(2)));
    assert_eq!(
        h.form("/job/delete", &[("name", "job1")]).await.text(),
        r#"{"errno":0,"msg":"success","data":{"name":"job1","command":"echo v2","cron_expr":"0 * * * *"}}"#
    );
    assert_eq!(h.form("/job/delete", &[("name", "job1")]).await.text(), r#"{"errno":0,"msg":"success","data":null}"#);
    // Unlike the seed's Go handlers, a GET never changes anything (README "Security").
    for write in ["/job/delete?name=job1", "/job/save?job={}", "/job/kill?name=job1"] {
        let r = h.get(write).await;
        assert_eq!(r.status, 405, "{write}");
        assert_eq!(r.header(header::ALLOW), "POST");
        assert_eq!(r.json()["errno"], -1);
    }
    // the read routes still answer any method, query string included
    assert_eq!(h.get("/job/log?name=job1").await.json()["errno"], 0);
}

#[actix_web::test]
async fn seed_save_keeps_other_fields_of_an_existing_job() {
    let h = Harness::new();
    h.create(
        json!({"name":"j","command":"a","cron_expr":"0 7 * * *","tz":"Asia/Tokyo","enabled":false,"timeout_secs":30}),
    )
    .await;
    let r = h.form("/job/save", &[("job", r#"{"name":"j","command":"b","cron_expr":"0 8 * * * 2031"}"#)]).await;
    assert_eq!(r.json()["errno"], 0, "{}", r.text());
    let job = h.get("/api/v1/jobs/j").await.json();
    assert_eq!(
        (
            job["command"].clone(),
            job["tz"].clone(),
            job["enabled"].clone(),
            job["timeout_secs"].clone(),
            job["dialect"].clone()
        ),
        (json!("b"), json!("Asia/Tokyo"), json!(false), json!(30), json!("seed"))
    );
}

#[actix_web::test]
async fn seed_save_refuses_invalid_jobs_and_saves_nothing() {
    let h = Harness::new();
    for (form, needle) in [
        (vec![("job", r#"{"name":"x","command":"true","cron_expr":"* *"}"#)], "cron_expr"),
        (vec![("job", r#"{"name":"","command":"true","cron_expr":"* * * * *"}"#)], "name"),
        (vec![("job", r#"{"command":"true","cron_expr":"* * * * *"}"#)], "name"),
        (vec![("job", r#"{"name":"x","command":"","cron_expr":"* * * * *"}"#)], "command"),
        (vec![("job", r#"{"name":"x","command":"true""#)], "JSON"),
        (vec![("job", r#"{"name":"a/b","command":"true","cron_expr":"* * * * *"}"#)], "name"),
        (vec![], "job"),
    ] {
        let r = h.form("/job/save", &form).await;
        assert_eq!(r.status, 200);
        let body = r.json();
        assert_eq!((body["errno"].clone(), body["data"].clone()), (json!(-1), Value::Null), "{form:?}");
        let msg = body["msg"].as_str().expect("msg");
        assert!(msg.contains(needle), "{form:?}: {msg}");
        let keys: Vec<&String> = body.as_object().expect("obj").keys().collect();
        assert_eq!(keys.len(), 3);
    }
    assert_eq!(h.get("/job/list").await.text(), r#"{"errno":0,"msg":"success","data":[]}"#);
    let r = h.form("/job/kill", &[("name", "")]).await;
    assert_eq!(r.json()["errno"], -1);
}

#[actix_web::test]
async fn seed_kill_publishes_a_kill_and_answers_the_name() {
    let h = Harness::new();
    let (_, rev) = h.backends().jobs.snapshot().await.expect("snapshot");
    let mut watch = h.backends().jobs.watch(Revision(rev.0 + 1)).await.expect("watch");
    assert_eq!(h.form("/job/kill", &[("name", "s")]).await.text(), r#"{"errno":0,"msg":"success","data":"s"}"#);
    assert_eq!(
        next_change(&mut watch).await,
        Change::Signal(Signal::Kill { job: JobName::parse("s").expect("name"), run: None })
    );
}

#[actix_web::test]
async fn seed_log_uses_snake_case_and_ms_since_epoch() {
    let h = Harness::new();
    let mut done = run("r1", "s", RunStatus::Killed, 10, true);
    done.err = "killed by request".into();
    done.output = "out\nerr\n".into();
    let mut newer = run("r2", "s", RunStatus::Running, 20, true);
    newer.output = String::new();
    h.add_runs(&[done, newer, run("r3", "other", RunStatus::Succeeded, 30, true)]).await;
    let base = 1_764_313_200_000_i64;
    let expected = format!(
        concat!(
            r#"{{"errno":0,"msg":"success","data":["#,
            r#"{{"job_name":"s","command":"echo s","err":"","output":"","plan_time":{},"schedule_time":{},"start_time":{},"end_time":0}},"#,
            r#"{{"job_name":"s","command":"echo s","err":"killed by request","output":"out\nerr\n","plan_time":{},"schedule_time":{},"start_time":{},"end_time":{}}}"#,
            r#"]}}"#
        ),
        base + 19_000,
        base + 20_000,
        base + 20_000,
        base + 9_000,
        base + 10_000,
        base + 10_000,
        base + 12_000
    );
    assert_eq!(h.get("/job/log?name=s&skip=0&limit=10").await.text(), expected);
    assert_eq!(h.form("/job/log", &[("name", "s")]).await.text(), expected);
    let data = |r: Resp| r.json()["data"].as_array().map(Vec::len);
    assert_eq!(data(h.get("/job/log?name=s&skip=abc&limit=-4").await), Some(2), "bad numbers fall back to defaults");
    assert_eq!(data(h.get("/job/log?name=s&skip=1&limit=1").await), Some(1));
    assert_eq!(data(h.get("/job/log?name=s&skip=5").await), Some(0));
    assert_eq!(data(h.get("/job/log?name=no%20such").await), Some(0));
    assert_eq!(data(h.get("/job/log").await), Some(3), "no name: every job's runs");
}

#[actix_web::test]
async fn seed_worker_list_is_addresses() {
    let h = Harness::new();
    assert_eq!(h.get("/worker/list").await.text(), r#"{"errno":0,"msg":"success","data":[]}"#);
    h.backends().members.join(&worker("w1", "10.0.0.1")).await.expect("join");
    h.backends().members.join(&worker("w2", "10.0.0.2")).await.expect("join");
    assert_eq!(h.get("/worker/list").await.text(), r#"{"errno":0,"msg":"success","data":["10.0.0.1","10.0.0.2"]}"#);
}

// ---------------------------------------------------------------------------------------------
// Page and listener

#[actix_web::test]
async fn admin_page_and_assets_are_served_with_their_types() {
    let h = Harness::new();
    let page = h.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(page.text().contains("<!doctype html>") && page.text().contains("/static/app.js"));
    assert!(page.header(header::CONTENT_SECURITY_POLICY).contains("default-src 'self'"));
    assert!(page.text().contains(r#"<script type="module" src="/static/app.js">"#));
    for module in ["app", "api", "dom", "format", "jobs", "editor", "runs", "workers", "charts"] {
        let js = h.get(&format!("/static/{module}.js")).await;
        assert_eq!(js.status, 200, "{module}.js");
        assert_eq!(js.header(header::CONTENT_TYPE), "text/javascript; charset=utf-8");
        assert_eq!(js.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!js.text().contains(sink), "{module}.js uses {sink}: the page renders data as text only");
        }
    }
    assert!(!page.text().contains("http://") && !page.text().contains("https://"), "no CDN");
    assert_eq!(h.get("/app.css").await.header(header::CONTENT_TYPE), "text/css; charset=utf-8");
    assert_eq!(h.get("/static/nothing.js").await.status, 404);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn state_listening_on(listen: String, dir: &tempfile::TempDir) -> AppState {
    AppState {
        backends: crate::backend::Backends::embedded(dir.path()).expect("embedded backends"),
        config: std::sync::Arc::new(Config { listen, api_token: "t".into(), ..Config::default() }),
        node: None,
        node_id: WorkerId("n".into()),
        started_at: Utc::now(),
        auth: Default::default(),
        essentials: Default::default(),
        alert_channels: Default::default(),
        metrics: Default::default(),
        live: Default::default(),
        output_followers: crate::http::Followers::new(64),
    }
}

#[actix_web::test]
async fn serve_binds_answers_over_tcp_and_refuses_a_taken_port() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(state_listening_on(format!("127.0.0.1:{port}"), &dir)).expect("binds");
    let handle = server.handle();
    actix_rt::spawn(server);
    let (live, big) = actix_rt::task::spawn_blocking(move || {
        let base = format!("http://127.0.0.1:{port}");
        let live = ureq::get(&format!("{base}/api/v1/health/live")).call().map(|r| r.status());
        let body = format!(r#"{{"name":"b","command":"{}","cron_expr":"* * * * *"}}"#, "x".repeat(2 * 1024 * 1024));
        let big = match ureq::post(&format!("{base}/api/v1/jobs"))
            .set("Content-Type", "application/json")
            .set("Authorization", "Bearer t")
            .send_string(&body)
        {
            Ok(r) => Ok(r.status()),
            Err(ureq::Error::Status(code, _)) => Ok(code),
            Err(e) => Err(e.to_string()),
        };
        (live.map_err(|e| e.to_string()), big)
    })
    .await
    .expect("client thread");
    assert_eq!(live, Ok(200));
    assert_eq!(big, Ok(413), "an oversized body is answered, not reset");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    match serve(state_listening_on(addr.clone(), &dir)) {
        Err(crate::error::StartupError::Bind { addr: a, .. }) => assert_eq!(a, addr),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("bound a taken port"),
    }
    let mut no_token = state_listening_on("0.0.0.0:0".into(), &dir);
    no_token.config = std::sync::Arc::new(Config { listen: "0.0.0.0:0".into(), ..Config::default() });
    let refused = serve(no_token);
    assert!(matches!(refused, Err(crate::error::StartupError::Role(_))), "no token, auth not off: refused");
    handle.stop(true).await;
}
