//! The seed's (cloud-org/crontab master) routes with its exact shapes (README "Seed compatibility"):
//! `{"errno","msg","data"}`, always HTTP 200 (401 when a token is required), form
//! bodies, jobs as `{"name","command","cron_expr"}` and run logs with ms-since-epoch times.
//!
//! Like the seed's Go handlers, each route reads its parameters from the query string and from an
//! `application/x-www-form-urlencoded` body (the body wins). Unlike the seed, the write routes
//! (`/job/save`, `/job/delete`, `/job/kill`) answer POST only (405 otherwise: a GET never changes
//! anything, README "Security"), the read routes any method, and an invalid name or cron
//! expression is refused with errno -1 and nothing is saved. Store failures answer a fixed
//! message; their cause is logged with the request id (also in `X-Request-Id`).

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AppState;
use crate::backend::{BackendError, Precondition, RunFilter, RunQuery, Signal};
use crate::domain::job::validate;
use crate::domain::{AuditAction, Caller, Dialect, Job, JobName, JobSpec, JobValidationError, RunRecord};

/// Default `limit` of `/job/log` (the seed's).
const DEFAULT_LOG_LIMIT: u32 = 10;
/// Largest `limit` of `/job/log`; larger values are clamped to it.
pub(crate) const MAX_LOG_LIMIT: u32 = 100;
/// Output bytes one `/job/log` reply carries in all; outputs past it are cut (with a marker),
/// so a reply stays a few MiB whatever the jobs printed.
pub(crate) const LOG_OUTPUT_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// 405 in the seed's shape for a write route called with another method than POST (the routes
/// are registered by `routes.rs`).
pub(crate) async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed().insert_header((header::ALLOW, "POST")).json(Reply {
        errno: -1,
        msg: "method not allowed: this route changes state and answers POST only",
        data: (),
    })
}

/// Whether `path` is a legacy route (its errors use the seed's shape).
pub(crate) fn is_legacy_path(path: &str) -> bool {
    path.starts_with("/job/") || path.starts_with("/worker/")
}

/// The seed's reply envelope, fields in the seed's order.
#[derive(Serialize, utoipa::ToSchema)]
struct Reply<'a, T: Serialize> {
    /// 0 on success, -1 on failure.
    errno: i32,
    /// `success`, or what went wrong.
    msg: &'a str,
    /// The route's data on success; null on failure.
    #[schema(nullable)]
    data: T,
}

/// A failure in the seed's shape: `{"errno":-1,"msg":"...","data":null}` (HTTP 200 from the
/// handlers, 401/403/429 from the middleware), as [`failure`] writes it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SeedFailure<'a> {
    /// Always -1.
    errno: i32,
    /// What went wrong.
    msg: &'a str,
    /// Always null.
    #[schema(value_type = Option<String>)]
    data: (),
}

/// The form of `/job/save`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SaveForm {
    /// The job as the seed's JSON: `{"name","command","cron_expr"}` (other fields ignored).
    job: String,
}

/// The form of `/job/delete` and `/job/kill`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct NameForm {
    /// The job's name.
    name: String,
}

/// The parameters of `/job/log` (query string or form body).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct LogForm {
    /// Only this job's runs; empty or absent = every job's.
    name: Option<String>,
    /// Runs to skip, newest first (default 0).
    skip: Option<u64>,
    /// Runs to return (default 10, at most 100).
    limit: Option<u32>,
}

fn success<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Reply { errno: 0, msg: "success", data })
}

fn failure(msg: &str) -> HttpResponse {
    HttpResponse::Ok().json(SeedFailure { errno: -1, msg, data: () })
}

/// 401 in the seed's shape.
pub(crate) fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().insert_header((header::WWW_AUTHENTICATE, "Bearer")).json(Reply {
        errno: -1,
        msg: "unauthorized",
        data: (),
    })
}

/// A refusal (403, 429) in the seed's shape with `status`.
pub(crate) fn refused(status: actix_web::http::StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(Reply { errno: -1, msg, data: () })
}

/// A store failure as the seed's error reply; causes that are not plain answers or outages are
/// logged, not sent.
fn backend_failure(req: &HttpRequest, e: BackendError) -> HttpResponse {
    let request_id = super::headers::RequestId::of(req).0;
    match e {
        BackendError::JobNotFound { .. } | BackendError::JobExists { .. } | BackendError::VersionConflict { .. } => {
            failure(&e.to_string())
        }
        _ if e.is_transient() => {
            log::warn!("Request failed: a store is unavailable. request_id={request_id} path={} error={e}", req.path());
            failure("store unavailable, try again later")
        }
        _ => {
            log::error!("Request failed. request_id={request_id} path={} error={e}", req.path());
            failure("internal error")
        }
    }
}

/// A job in the seed's shape.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
struct SeedJob<'a> {
    name: &'a str,
    command: &'a str,
    cron_expr: &'a str,
}

impl<'a> From<&'a Job> for SeedJob<'a> {
    fn from(j: &'a Job) -> Self {
        Self { name: j.name.as_str(), command: &j.command, cron_expr: &j.cron_expr }
    }
}

/// A run in the seed's `/job/log` shape (ms since the epoch).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SeedLog<'a> {
    job_name: &'a str,
    command: &'a str,
    err: &'a str,
    output: &'a str,
    plan_time: i64,
    schedule_time: i64,
    start_time: i64,
    end_time: i64,
}

impl<'a> From<&'a RunRecord> for SeedLog<'a> {
    fn from(r: &'a RunRecord) -> Self {
        Self {
            job_name: r.job.as_str(),
            command: &r.command,
            err: &r.err,
            output: &r.output,
            plan_time: r.scheduled_at.timestamp_millis(),
            schedule_time: r.dispatched_at.timestamp_millis(),
            start_time: r.start_time().timestamp_millis(),
            end_time: r.ended_at.as_ref().map_or(0, DateTime::<Utc>::timestamp_millis),
        }
    }
}

/// Query string and form body parameters; the body wins. The body is read when it is
/// `application/x-www-form-urlencoded` or untyped.
fn params(req: &HttpRequest, body: Result<Bytes, actix_web::Error>) -> Result<HashMap<String, String>, String> {
    let mut out: HashMap<String, String> = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner().into_iter().collect())
        .unwrap_or_default();
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_form =
        content_type.is_empty() || content_type.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded");
    let body = body.map_err(|e| format!("cannot read request body: {e}"))?;
    if is_form && !body.is_empty() {
        let text = std::str::from_utf8(&body).map_err(|_| "request body is not UTF-8".to_owned())?;
        let form =
            web::Query::<Vec<(String, String)>>::from_query(text).map_err(|e| format!("invalid form body: {e}"))?;
        out.extend(form.into_inner());
    }
    Ok(out)
}

/// `invalid <field>: <message>`.
fn invalid(e: &JobValidationError) -> String {
    format!("invalid {}: {}", e.field, e.message)
}

/// The seed's job JSON: `name`, `command`, `cron_expr` matched case-insensitively (as Go's
/// encoding/json does); other fields ignored; `null` or missing = empty.
fn parse_seed_job(raw: &str) -> Result<(String, String, String), String> {
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| format!("invalid job JSON: {e}"))?;
    let obj = match value {
        serde_json::Value::Object(obj) => obj,
        serde_json::Value::Null => serde_json::Map::new(),
        _ => return Err("invalid job JSON: expected an object {\"name\",\"command\",\"cron_expr\"}".into()),
    };
    let mut fields = [String::new(), String::new(), String::new()];
    for (key, value) in obj {
        let Some(i) = ["name", "command", "cron_expr"].iter().position(|k| k.eq_ignore_ascii_case(&key)) else {
            continue;
        };
        match value {
            serde_json::Value::String(s) => fields[i] = s,
            serde_json::Value::Null => {}
            _ => return Err(format!("invalid job JSON: {key} must be a string")),
        }
    }
    let [name, command, cron_expr] = fields;
    Ok((name, command, cron_expr))
}

/// `POST /job/save` (form `job=<json>`): data = the previous job, or null when new.
#[utoipa::path(
    post,
    path = "/job/save",
    tag = "legacy",
    operation_id = "legacy_job_save",
    request_body(content = SaveForm, content_type = "application/x-www-form-urlencoded", description = "Form body (or the same fields in the query string; the body wins)"),
    responses((status = 200, description = "errno 0: data is the previous job (null when new); errno -1: msg says why nothing was saved", body = Reply<Option<SeedJob>>))
)]
pub(crate) async fn save(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    body: Result<Bytes, actix_web::Error>,
) -> HttpResponse {
    let params = match params(&req, body) {
        Ok(p) => p,
        Err(msg) => return failure(&msg),
    };
    let Some(raw) = params.get("job") else { return failure("missing form field job") };
    let (name, command, cron_expr) = match parse_seed_job(raw) {
        Ok(t) => t,
        Err(msg) => return failure(&msg),
    };
    let job_name = match JobName::parse(&name) {
        Ok(n) => n,
        Err(e) => return failure(&invalid(&e)),
    };
    let existing = match state.backends.jobs.get(&job_name).await {
        Ok(j) => j,
        Err(e) => return backend_failure(&req, e),
    };
    // An existing job keeps its other fields (enabled, tz, ...); the seed's routes always speak
    // the seed's dialect (6 fields = 5 + year).
    let job = match existing {
        Some(mut job) => {
            job.command = command;
            job.cron_expr = cron_expr;
            job.dialect = Dialect::Seed;
            validate(&job).map(|()| job)
        }
        None => JobSpec { name: Some(name), command, cron_expr, dialect: Some(Dialect::Seed), ..JobSpec::default() }
            .into_job(None),
    };
    let job = match job.and_then(|j| super::jobs::may_run_as(&j, &state.config).map(|()| j)) {
        Ok(j) => j,
        Err(e) => return failure(&invalid(&e)),
    };
    let audit = super::audit::context(&req, &caller, AuditAction::SeedSave);
    match state.backends.jobs.put_audited(job, Precondition::Any, audit).await {
        Ok(out) => success(out.previous.as_ref().map(SeedJob::from)),
        Err(e) => backend_failure(&req, e),
    }
}

/// A `name` parameter, validated.
fn name_param(params: &HashMap<String, String>) -> Result<JobName, String> {
    let raw = params.get("name").map(String::as_str).unwrap_or("");
    JobName::parse(raw).map_err(|e| invalid(&e))
}

/// `POST /job/delete` (form `name`): data = the deleted job, or null when absent.
#[utoipa::path(
    post,
    path = "/job/delete",
    tag = "legacy",
    operation_id = "legacy_job_delete",
    request_body(content = NameForm, content_type = "application/x-www-form-urlencoded", description = "Form body (or the same fields in the query string; the body wins)"),
    responses((status = 200, description = "errno 0: data is the deleted job (null when there was none); errno -1: msg says why", body = Reply<Option<SeedJob>>))
)]
pub(crate) async fn delete(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    body: Result<Bytes, actix_web::Error>,
) -> HttpResponse {
    let name = match params(&req, body).and_then(|p| name_param(&p)) {
        Ok(n) => n,
        Err(msg) => return failure(&msg),
    };
    let audit = super::audit::context(&req, &caller, AuditAction::SeedDelete);
    match state.backends.jobs.delete_audited(&name, None, audit).await {
        Ok(previous) => success(previous.as_ref().map(SeedJob::from)),
        Err(e) => backend_failure(&req, e),
    }
}

/// `GET /job/list`: every job in the seed's shape, sorted by name (`[]` when none).
#[utoipa::path(
    method(get, post),
    path = "/job/list",
    tag = "legacy",
    operation_id = "legacy_job_list",
    responses((status = 200, description = "errno 0: every job, sorted by name; errno -1 (data null): the store failed", body = Reply<Vec<SeedJob>>))
)]
pub(crate) async fn list(state: Data<AppState>, req: HttpRequest) -> HttpResponse {
    match state.backends.jobs.snapshot().await {
        Ok((mut jobs, _)) => {
            jobs.sort_by(|a, b| a.name.cmp(&b.name));
            success(jobs.iter().map(SeedJob::from).collect::<Vec<_>>())
        }
        Err(e) => backend_failure(&req, e),
    }
}

/// `POST /job/kill` (form `name`): data = the name.
#[utoipa::path(
    post,
    path = "/job/kill",
    tag = "legacy",
    operation_id = "legacy_job_kill",
    request_body(content = NameForm, content_type = "application/x-www-form-urlencoded", description = "Form body (or the same fields in the query string; the body wins)"),
    responses((status = 200, description = "errno 0: data is the name (every live run of the job is killed); errno -1: msg says why", body = Reply<String>))
)]
pub(crate) async fn kill(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    body: Result<Bytes, actix_web::Error>,
) -> HttpResponse {
    let name = match params(&req, body).and_then(|p| name_param(&p)) {
        Ok(n) => n,
        Err(msg) => return failure(&msg),
    };
    let current = match state.backends.jobs.get(&name).await {
        Ok(j) => j,
        Err(e) => return backend_failure(&req, e),
    };
    let audit = super::audit::context(&req, &caller, AuditAction::SeedKill);
    match state.backends.jobs.signal_audited(Signal::Kill { job: name.clone(), run: None }, current, audit).await {
        Ok(_) => success(name.as_str()),
        Err(e) => backend_failure(&req, e),
    }
}

/// `GET|POST /job/log?name&skip&limit`: runs newest first, with their outputs. Bad numbers
/// (not a number, negative, 0) fall back to the defaults, as in the seed; a `limit` over
/// [`MAX_LOG_LIMIT`] is a valid request for "as many as you give" and is clamped to it. Outputs
/// share [`LOG_OUTPUT_BUDGET_BYTES`]: past it each is cut, with a marker saying how much is not
/// shown. An empty name lists every job's runs; a name no job can have lists nothing.
#[utoipa::path(
    method(get, post),
    path = "/job/log",
    tag = "legacy",
    operation_id = "legacy_job_log",
    params(
        ("name" = Option<String>, Query, description = "Only this job's runs; empty = every job's"),
        ("skip" = Option<u64>, Query, description = "Runs to skip, newest first (default 0)"),
        ("limit" = Option<u32>, Query, description = "Runs to return (default 10, at most 100)"),
    ),
    request_body(content = LogForm, content_type = "application/x-www-form-urlencoded", description = "Form body (or the same fields in the query string; the body wins)"),
    responses((status = 200, description = "errno 0: runs newest first with their outputs (ms since the epoch); errno -1 (data null): the store failed", body = Reply<Vec<SeedLog>>))
)]
pub(crate) async fn log(
    state: Data<AppState>,
    req: HttpRequest,
    body: Result<Bytes, actix_web::Error>,
) -> HttpResponse {
    let params = match params(&req, body) {
        Ok(p) => p,
        Err(msg) => return failure(&msg),
    };
    let name = params.get("name").map(|s| s.trim()).unwrap_or("");
    let job = if name.is_empty() {
        None
    } else {
        match JobName::parse(name) {
            Ok(n) => Some(n),
            Err(_) => return success(Vec::<SeedLog<'_>>::new()),
        }
    };
    let skip = params.get("skip").and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    let limit = params
        .get("limit")
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_LOG_LIMIT)
        .min(MAX_LOG_LIMIT);
    let query = RunQuery { filter: RunFilter { job, ..RunFilter::default() }, after: None, skip, limit };
    match state.backends.logs.query_with_output(&query, LOG_OUTPUT_BUDGET_BYTES).await {
        Ok(page) => success(page.runs.iter().map(SeedLog::from).collect::<Vec<_>>()),
        Err(e) => backend_failure(&req, e),
    }
}

/// `GET /worker/list`: live workers' addresses.
#[utoipa::path(
    method(get, post),
    path = "/worker/list",
    tag = "legacy",
    operation_id = "legacy_worker_list",
    responses((status = 200, description = "errno 0: the live workers' addresses; errno -1 (data null): the store failed", body = Reply<Vec<String>>))
)]
pub(crate) async fn workers(state: Data<AppState>, req: HttpRequest) -> HttpResponse {
    match state.backends.members.live().await {
        Ok(live) => success(live.into_iter().map(|w| w.address).collect::<Vec<_>>()),
        Err(e) => backend_failure(&req, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_job_json_is_read_leniently() {
        let (n, c, e) =
            parse_seed_job(r#"{"Name":"a","command":"echo","cron_expr":"* * * * *","extra":1}"#).expect("parses");
        assert_eq!((n.as_str(), c.as_str(), e.as_str()), ("a", "echo", "* * * * *"));
        assert!(parse_seed_job("{").is_err());
        assert!(parse_seed_job("[1]").is_err());
        assert!(parse_seed_job(r#"{"name":5}"#).is_err());
        assert_eq!(parse_seed_job("null").expect("null").0, "");
    }
}
