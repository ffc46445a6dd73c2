//! `/api/v1/jobs`: list (with each job's last run), get, create, replace (optimistic version
//! check), delete, enable/disable, run now and kill (README "API").
//!
//! Validation is `JobSpec::into_job`; storage, versions and timestamps are the job store's;
//! run-now and kill are signals the actors pick up from the store's watch. Every change is
//! written with its audit entry (`audit::context`: the caller, its address, the action).

use std::collections::HashMap;

use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::context;
use super::error::ApiError;
use super::{number_param, param, AppState};
use crate::backend::{BackendError, Precondition, Signal};
use crate::config::Config;
use crate::domain::{AuditAction, Caller, Job, JobName, JobSpec, RunId, RunRecord, RunStatus};

/// A job as served: the stored job plus its next fire time and the zone it is read in.
#[derive(Serialize)]
pub(crate) struct JobView<'a> {
    #[serde(flatten)]
    job: &'a Job,
    /// Next fire time; null when disabled or the schedule never fires again.
    next_run_at: Option<DateTime<Utc>>,
    /// The zone the expression is read in (the job's, or the node default).
    effective_tz: &'static str,
    /// How the expression reads in words ("every 5 minutes, Monday to Friday").
    schedule_description: Option<String>,
}

/// The served form of `job`.
pub(crate) fn view<'a>(job: &'a Job, config: &Config) -> JobView<'a> {
    let tz = job.zone(config.default_zone());
    let schedule = job.schedule().ok();
    let next_run_at = if job.enabled { schedule.as_ref().and_then(|s| s.next_after(Utc::now(), tz)) } else { None };
    JobView { job, next_run_at, effective_tz: tz.name(), schedule_description: schedule.map(|s| s.describe()) }
}

/// A job in the list: its view plus a summary of its newest run (null when it never ran).
#[derive(Serialize)]
struct ListedJob<'a> {
    #[serde(flatten)]
    view: JobView<'a>,
    last_run: Option<LastRun>,
}

/// The newest run of a job (by start time), as the job list shows it.
#[derive(Serialize)]
struct LastRun {
    id: RunId,
    status: RunStatus,
    /// When it started (or was decided, for runs that never started).
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    duration_ms: Option<u64>,
    exit_code: Option<i32>,
}

impl From<RunRecord> for LastRun {
    fn from(run: RunRecord) -> Self {
        Self {
            started_at: run.start_time(),
            id: run.id,
            status: run.status,
            ended_at: run.ended_at,
            duration_ms: run.duration_ms,
            exit_code: run.exit_code,
        }
    }
}

/// A job name from the URL (400 invalid_job, field `name`, when malformed).
pub(crate) fn parse_name(raw: &str) -> Result<JobName, ApiError> {
    Ok(JobName::parse(raw)?)
}

/// `GET /api/v1/jobs[?q=substring]`: every job, sorted by name, each with its `last_run`.
///
/// The jobs come from the job store; when the log store cannot answer, the list is still served
/// with `last_run` null everywhere and `last_run_error` saying why.
pub(crate) async fn list(
    state: Data<AppState>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let q = param(&query, "q");
    let snapshot = state.backends.jobs.snapshot_checked().await?;
    let mut jobs = snapshot.jobs;
    jobs.retain(|j| q.is_none_or(|q| j.name.as_str().contains(q)));
    // Issue 9, item 8: documents in the store that are not valid jobs are listed apart, with
    // the reason they are not planned.
    let invalid: Vec<serde_json::Value> = snapshot
        .invalid
        .iter()
        .filter(|j| q.is_none_or(|q| j.name.as_str().contains(q)))
        .map(|j| serde_json::json!({ "name": j.name, "invalid": j.reason }))
        .collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    // One log store call for every job's newest run (summaries: no output is read).
    let names: Vec<JobName> = jobs.iter().map(|j| j.name.clone()).collect();
    let (mut last_runs, last_run_error) = match state.backends.logs.last_runs(&names).await {
        Ok(found) => (found, None),
        Err(e) => (HashMap::new(), Some(e.to_string())),
    };
    let listed: Vec<ListedJob<'_>> = jobs
        .iter()
        .map(|job| ListedJob {
            view: view(job, &state.config),
            last_run: last_runs.remove(&job.name).map(LastRun::from),
        })
        .collect();
    let mut body = serde_json::json!({ "jobs": listed, "invalid_jobs": invalid });
    if let (Some(e), Some(obj)) = (last_run_error, body.as_object_mut()) {
        log::debug!("Job list served without last runs: the log store failed. error={e}");
        obj.insert("last_run_error".into(), format!("last runs unavailable: {e}").into());
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Save-time check of `run_as_user` (README "Running jobs as another user"): the user must be
/// in this node's `executor.allowed_users`, and a node that runs jobs itself (role `all`) must
/// run as root. A master need not be root: its workers check that again before every run.
pub(crate) fn may_run_as(job: &Job, config: &Config) -> Result<(), crate::domain::JobValidationError> {
    let runs_jobs_here = config.role == crate::config::Role::All;
    let root_or_not_needed = !runs_jobs_here || nix::unistd::geteuid().is_root();
    crate::domain::check_run_as(job, &config.executor.allowed_users, root_or_not_needed)
}

/// `POST /api/v1/jobs`: create; 409 job_exists when the name is taken.
pub(crate) async fn create(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    spec: Json<JobSpec>,
) -> Result<HttpResponse, ApiError> {
    let job = spec.into_inner().into_job(None)?;
    may_run_as(&job, &state.config)?;
    let audit = context(&req, &caller, AuditAction::Create);
    let out = state.backends.jobs.put_audited(job, Precondition::Absent, audit).await?;
    Ok(HttpResponse::Created().json(view(&out.job, &state.config)))
}

/// `GET /api/v1/jobs/{name}`.
pub(crate) async fn get(state: Data<AppState>, name: Path<String>) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let job = state.backends.jobs.get(&name).await?.ok_or_else(|| ApiError::job_not_found(name.as_str()))?;
    Ok(HttpResponse::Ok().json(view(&job, &state.config)))
}

/// `PUT /api/v1/jobs/{name}`: with `version`, replace only that version; without, create or replace.
pub(crate) async fn replace(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
    spec: Json<JobSpec>,
) -> Result<HttpResponse, ApiError> {
    let spec = spec.into_inner();
    let precondition = spec.version.map_or(Precondition::Any, Precondition::Version);
    let job = spec.into_job(Some(name.as_str()))?;
    may_run_as(&job, &state.config)?;
    // A replace that finds no job is recorded as a create.
    let audit = context(&req, &caller, AuditAction::Replace);
    let out = state.backends.jobs.put_audited(job, precondition, audit).await?;
    Ok(HttpResponse::Ok().json(view(&out.job, &state.config)))
}

/// `DELETE /api/v1/jobs/{name}[?version=N]`.
pub(crate) async fn remove(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
    query: Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let version = number_param(&query, "version", 0..=u64::MAX)?;
    let audit = context(&req, &caller, AuditAction::Delete);
    let job = state
        .backends
        .jobs
        .delete_audited(&name, version, audit)
        .await?
        .ok_or_else(|| ApiError::job_not_found(name.as_str()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": view(&job, &state.config) })))
}

/// `POST /api/v1/jobs/{name}/enable`.
pub(crate) async fn enable(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(&state, &name, true, context(&req, &caller, AuditAction::Enable)).await
}

/// `POST /api/v1/jobs/{name}/disable`.
pub(crate) async fn disable(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_enabled(&state, &name, false, context(&req, &caller, AuditAction::Disable)).await
}

/// Read, flip `enabled`, write back at the version read; a concurrent writer costs one retry.
async fn set_enabled(
    state: &AppState,
    raw: &str,
    enabled: bool,
    audit: crate::domain::AuditContext,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(raw)?;
    let mut retried = false;
    loop {
        let mut job = state.backends.jobs.get(&name).await?.ok_or_else(|| ApiError::job_not_found(name.as_str()))?;
        job.enabled = enabled;
        let version = job.version;
        match state.backends.jobs.put_audited(job, Precondition::Version(version), audit.clone()).await {
            Ok(out) => return Ok(HttpResponse::Ok().json(view(&out.job, &state.config))),
            Err(BackendError::VersionConflict { .. }) if !retried => retried = true,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `POST /api/v1/jobs/{name}/run`: run once now (even when disabled), on one worker.
pub(crate) async fn run_now(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let Some(job) = state.backends.jobs.get(&name).await? else {
        return Err(ApiError::job_not_found(name.as_str()));
    };
    let request = uuid::Uuid::now_v7().to_string();
    let audit = context(&req, &caller, AuditAction::Run).with_detail(request.clone());
    let signal = Signal::RunNow { job: name.clone(), request: request.clone() };
    state.backends.jobs.signal_audited(signal, Some(job), audit).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "job": name, "request": request })))
}

/// `POST /api/v1/jobs/{name}/kill`: kill every live run of the job, wherever it runs. The job
/// need not exist any more: runs of a deleted job can still be killed.
pub(crate) async fn kill(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&name)?;
    let current = state.backends.jobs.get(&name).await?;
    let audit = context(&req, &caller, AuditAction::Kill);
    state.backends.jobs.signal_audited(Signal::Kill { job: name.clone(), run: None }, current, audit).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "job": name })))
}

/// Body of `POST /api/v1/jobs/{name}/backfill`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackfillBody {
    /// First instant of the range (inclusive), RFC 3339.
    from: DateTime<Utc>,
    /// Last instant of the range (inclusive), RFC 3339; not in the future.
    to: DateTime<Utc>,
}

/// `POST /api/v1/jobs/{name}/backfill {from, to}`: runs the job's ticks in a past range, each
/// once cluster-wide and one after another on the worker that claims the request
/// (`trigger = "backfill"`, each with its own `scheduled_at`). At most
/// [`crate::domain::catchup::MAX_BACKFILL_TICKS`] ticks per request.
pub(crate) async fn backfill(
    state: Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    name: Path<String>,
    body: Json<BackfillBody>,
) -> Result<HttpResponse, ApiError> {
    use crate::domain::catchup::{backfill_ticks, BackfillError, BackfillRequest};
    let name = parse_name(&name)?;
    let Some(job) = state.backends.jobs.get(&name).await? else {
        return Err(ApiError::job_not_found(name.as_str()));
    };
    let schedule =
        job.schedule().map_err(|e| ApiError::bad_param("cron_expr", format!("the job's schedule is invalid: {e}")))?;
    let tz = job.zone(state.config.default_zone());
    let BackfillBody { from, to } = body.into_inner();
    let ticks = backfill_ticks(&schedule, tz, from, to, Utc::now()).map_err(|e| {
        let field = match e {
            BackfillError::Reversed { .. } | BackfillError::Empty => "from",
            BackfillError::Future { .. } | BackfillError::TooMany { .. } => "to",
        };
        ApiError::bad_param(field, e.to_string())
    })?;
    let request = BackfillRequest { id: uuid::Uuid::now_v7().to_string(), from, to };
    let request_id = request.to_request_id();
    let audit = context(&req, &caller, AuditAction::Run).with_detail(request_id.clone());
    let signal = Signal::RunNow { job: name.clone(), request: request_id.clone() };
    state.backends.jobs.signal_audited(signal, Some(job), audit).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "job": name,
        "request": request_id,
        "ticks": ticks.len(),
        "first": ticks.first(),
        "last": ticks.last(),
    })))
}
